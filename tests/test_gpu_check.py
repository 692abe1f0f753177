"""benchmarks/gpu_check.py: its three steps run on the CPU here, and --device cuda without CUDA says so.

The script is meant for a machine with a GPU (`--device cuda`); with `--device cpu --quick` the same
steps (proxy training, torch latency, a 2-trial search through the CLI) run here, small.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
TINY_SPACE = ROOT / "tests" / "data" / "tiny_space.yaml"


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_gpu_check_runs_its_three_steps_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    p = run("--device", "cpu", "--quick", "--space", str(TINY_SPACE), "--out", str(out), timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    for i, name in enumerate(("train", "latency", "search"), 1):
        assert any(line.startswith(f"[{i}/3] PASS {name}") for line in lines), p.stdout

    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["passed"] and summary["device"] == "cpu" and summary["quick"]
    steps = summary["steps"]
    assert set(steps) == {"train", "latency", "search"} and all(s["passed"] for s in steps.values())
    for s in steps.values():
        assert math.isfinite(s["seconds"]) and s["seconds"] > 0

    train = steps["train"]
    assert math.isfinite(train["loss"]) and train["images_per_s"] > 0 and math.isfinite(train["images_per_s"])
    assert train["train_forward_dtypes"] == ["float32"] and not train["amp"]  # AMP is CUDA only
    assert train["peak_rss_mib"] > 0

    lat = steps["latency"]
    assert 0 < lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"] and math.isfinite(lat["std_ms"])
    assert lat["target"]["device"] == "cpu" and lat["target"]["backend"] == "torch"

    search = steps["search"]
    assert search["returncode"] == 0 and search["evaluated"] == 2 and not search["failed"]
    assert "--gpus-per-trial 0" in search["command"] and "--latency-backend torch" in search["command"]
    for t in search["trials"]:
        assert t["trained"] and t["latency_source"] == "measured" and t["latency_device"] == "cpu"
        assert math.isfinite(t["latency_ms"]) and t["latency_ms"] > 0 and math.isfinite(t["map"])
    assert (out / "search" / "studies" / "gpu-check" / "study.db").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_gpu_check_on_cuda_without_cuda_says_so_in_one_line(tmp_path):
    p = run("--device", "cuda", "--out", str(tmp_path / "out"), timeout=60)
    assert p.returncode == 2
    assert p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert err[0].startswith("gpu_check: error: --device cuda") and "no CUDA device" in err[0]
    assert not (tmp_path / "out").exists()  # nothing started, nothing written
