"""benchmarks/bench_fidelity.py's report: from recorded runs to taus, intervals and the plot."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_fidelity as bf  # noqa: E402


def test_report_ranks_each_signal_against_the_long_run(tmp_path):
    n = 6
    archs = [{"seed": i, "latency_ms": 10.0 - i, "arch": {},
              "scores": {"macs": i, "params": -i, "naswot": i % 2, "synflow": i, "zico": 5 - i}} for i in range(n)]
    (tmp_path / "archs.json").write_text(json.dumps({"archs": archs}))
    long = [0.1 * i for i in range(n)]
    runs = [{"arch": i, "steps": 40, "seed": 0, "map": long[i], "time_s": 10.0} for i in range(n)]
    runs += [{"arch": i, "steps": 8, "seed": 0, "map": long[n - 1 - i], "time_s": 2.0} for i in range(n)]  # reversed
    runs += [{"arch": i, "steps": 8, "seed": 1, "map": long[n - 1 - i], "time_s": 2.0} for i in range(n)]
    (tmp_path / "synthetic.json").write_text(json.dumps({"runs": runs}))
    bf.report(SimpleNamespace(out=str(tmp_path)))
    rows = json.loads((tmp_path / "report.json").read_text())["synthetic"]["rankings"]
    assert rows["proxy 8 steps, seed 0"]["tau"] == pytest.approx(-1.0)
    assert rows["macs"]["tau"] == pytest.approx(1.0) and rows["zico"]["tau"] == pytest.approx(-1.0)
    assert rows["latency"]["tau"] == pytest.approx(-1.0)
    assert rows["repeatability 8 steps (seed 0 vs 1)"]["tau"] == pytest.approx(1.0)
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000
    assert "synthetic (vs 40 steps): tau" in (tmp_path / "report.md").read_text()


def test_the_longest_run_is_the_reference_and_a_shorter_long_one_becomes_a_proxy(tmp_path):
    n = 5
    archs = [{"seed": i, "latency_ms": 1.0, "arch": {}, "scores": dict.fromkeys(bf.SCORES, float(i))}
             for i in range(n)]
    (tmp_path / "archs.json").write_text(json.dumps({"archs": archs}))
    runs = [{"arch": i, "steps": 80, "seed": 0, "map": 0.1 * i, "time_s": 8.0} for i in range(n)]
    runs += [{"arch": i, "steps": 40, "seed": 0, "map": 0.1 * (n - i), "time_s": 4.0} for i in range(n)]
    (tmp_path / "synthetic.json").write_text(json.dumps({"runs": runs}))
    bf.report(SimpleNamespace(out=str(tmp_path)))
    figures = json.loads((tmp_path / "report.json").read_text())["synthetic"]
    assert figures["long_steps"] == 80 and figures["long_map"] == pytest.approx([0.1 * i for i in range(n)])
    assert figures["rankings"]["proxy 40 steps, seed 0"]["tau"] == pytest.approx(-1.0)
