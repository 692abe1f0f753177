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


def test_two_proxy_seeds_averaged_rank_as_one_steadier_proxy(tmp_path):
    n = 6
    archs = [{"seed": i, "latency_ms": 1.0, "arch": {}, "scores": dict.fromkeys(bf.SCORES, float(i))}
             for i in range(n)]
    (tmp_path / "archs.json").write_text(json.dumps({"archs": archs}))
    noise = [-0.25, -0.25, 0.25, 0.25, -0.25, -0.25]  # opposite on the two seeds: their mean is exact
    runs = [{"arch": i, "steps": 40, "seed": 2, "map": 0.1 * i, "time_s": 8.0} for i in range(n)]
    runs += [{"arch": i, "steps": 8, "seed": seed, "map": 0.1 * i + sign * noise[i], "time_s": 2.0}
             for i in range(n) for seed, sign in ((0, 1), (1, -1))]
    (tmp_path / "synthetic.json").write_text(json.dumps({"runs": runs}))
    bf.report(SimpleNamespace(out=str(tmp_path)))
    rows = json.loads((tmp_path / "report.json").read_text())["synthetic"]["rankings"]
    assert rows["proxy 8 steps, seed 0"]["tau"] < 0.5 and rows["proxy 8 steps, seed 1"]["tau"] < 0.5
    assert rows["proxy 8 steps, mean of seeds 0 and 1"]["tau"] == pytest.approx(1.0)


def test_the_plot_shows_each_proxy_length_once_averaged_over_seeds_where_it_can():
    values = {"proxy 8 steps, seed 0": [], "proxy 8 steps, seed 1": [], "proxy 8 steps, mean of seeds 0 and 1": [],
              "proxy 16 steps, seed 1": [], "proxy 128 steps, seed 0": [], "macs": []}
    assert bf.plotted_proxies(values) == ["proxy 8 steps, mean of seeds 0 and 1", "proxy 16 steps, seed 1",
                                          "proxy 128 steps, seed 0"]


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


def _append_rows(path: str, shard: int, n: int) -> None:
    for i in range(n):
        bf.record_run(Path(path), {"arch": shard, "steps": i}, {"runs": []})


def test_shards_in_two_processes_lose_no_run(tmp_path):
    # two `train --shard I/2` processes append to one DATA.json; the lock merges their rows
    import multiprocessing

    path = tmp_path / "synthetic.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_rows, args=(str(path), shard, 25)) for shard in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = json.loads(path.read_text())["runs"]
    assert sorted((r["arch"], r["steps"]) for r in rows) == [(s, i) for s in (0, 1) for i in range(25)]


def test_a_bad_shard_is_one_line_and_exit_2():
    import subprocess

    script = Path(bf.__file__)
    for bad in ("2/2", "a/b", "1"):
        r = subprocess.run([sys.executable, str(script), "train", "--data", "synthetic", "--shard", bad],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "--shard" in r.stderr and "Traceback" not in r.stderr
    assert bf.parse_shard("1/3") == (1, 3)


def test_the_reference_trains_on_a_seed_no_proxy_shares():
    args = bf.main_parser().parse_args(["train", "--data", "synthetic", "--steps", "16", "160",
                                        "--repeat-steps", "160", "--long-steps", "800"])
    wanted = bf.runs_wanted(args)
    proxy_seeds = {seed for steps, seed in wanted if steps != 800}
    long_seeds = {seed for steps, seed in wanted if steps == 800}
    assert long_seeds and not long_seeds & proxy_seeds


def test_an_independent_reference_seed_is_preferred_and_a_second_one_measures_its_noise(tmp_path):
    n = 5
    archs = [{"seed": i, "latency_ms": 1.0, "arch": {}, "scores": dict.fromkeys(bf.SCORES, float(i))}
             for i in range(n)]
    (tmp_path / "archs.json").write_text(json.dumps({"archs": archs}))
    runs = [{"arch": i, "steps": 40, "seed": 0, "map": 0.1 * (n - i), "time_s": 4.0} for i in range(n)]
    runs += [{"arch": i, "steps": 80, "seed": 0, "map": 0.1 * (n - i), "time_s": 8.0} for i in range(n)]  # shares 0
    runs += [{"arch": i, "steps": 80, "seed": 2, "map": 0.1 * i, "time_s": 8.0} for i in range(n)]
    runs += [{"arch": i, "steps": 80, "seed": 3, "map": 0.1 * i, "time_s": 8.0} for i in range(n - 1)]  # unfinished
    (tmp_path / "synthetic.json").write_text(json.dumps({"runs": runs}))
    bf.report(SimpleNamespace(out=str(tmp_path)))
    figures = json.loads((tmp_path / "report.json").read_text())["synthetic"]
    assert figures["long_seed"] == 2 and figures["long_map"] == pytest.approx([0.1 * i for i in range(n)])
    assert figures["rankings"]["proxy 40 steps, seed 0"]["tau"] == pytest.approx(-1.0)
    assert figures["rankings"]["repeatability 80 steps (seed 2 vs 0)"]["tau"] == pytest.approx(-1.0)
    assert not any("seed 2 vs 3" in label for label in figures["rankings"])  # seed 3 is not finished
