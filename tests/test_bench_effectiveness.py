"""benchmarks/bench_effectiveness.py's resume rules: which long trainings a rerun keeps."""
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_effectiveness as be  # noqa: E402


def _state(long_steps: int) -> dict:
    return {"args": {"long_steps": long_steps, "trials": 8},
            "searches": {"tpe-0": {"arch": {"n": 0}, "long": {"map": 0.5}},  # saved before runs recorded steps
                         "random-0": {"arch": {"n": 1}, "long": {"map": 0.4, "steps": 320, "seed": 3}},
                         "tpe-1": {"arch": {"n": 2}}},  # searched, not yet trained long
            "baseline": {"arch": {}, "long": {"map": 0.45}}}


def test_an_older_long_run_keeps_the_length_it_was_trained_at():
    state = _state(long_steps=160)
    before = be.stamp_long_runs(state)
    assert before["long_steps"] == 160
    assert state["searches"]["tpe-0"]["long"]["steps"] == 160 and state["baseline"]["long"]["steps"] == 160
    assert state["searches"]["tpe-0"]["long"]["seed"] == 0  # before --long-seed, long runs were on seed 0
    assert state["searches"]["random-0"]["long"]["steps"] == 320  # its own record stands
    assert state["searches"]["random-0"]["long"]["seed"] == 3


def test_a_rerun_at_another_long_length_retrains_only_what_is_not_at_it():
    state = _state(long_steps=160)
    be.stamp_long_runs(state)
    state["args"] = {"long_steps": 320, "trials": 8}  # the rerun's arguments replace the saved ones
    done = {k: be.long_done(v, 320, seed=3) for k, v in state["searches"].items()}
    assert done == {"tpe-0": False, "random-0": True, "tpe-1": False}
    assert not be.long_done(state["baseline"], 320, seed=0) and be.long_done(state["baseline"], 160, seed=0)


def test_a_rerun_on_another_long_seed_retrains_every_long_run():
    state = _state(long_steps=320)
    be.stamp_long_runs(state)
    assert not be.long_done(state["searches"]["random-0"], 320, seed=4)
    assert not be.long_done(state["searches"]["tpe-0"], 320, seed=3)  # trained on seed 0, not 3


def test_a_long_seed_that_a_search_uses_is_refused_in_one_line(tmp_path):
    script = Path(be.__file__)
    r = subprocess.run([sys.executable, str(script), "--seeds", "0", "1", "--long-seed", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--long-seed 1 is a search's seed" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "effectiveness.json").exists()


def test_latency_passes_interleave_so_a_slow_spell_cannot_take_every_pass_of_one_detector():
    calls = []

    def time_one(key, model):
        calls.append(key)
        return model * (2.0 if 2 <= len(calls) <= 4 else 1.0)  # the host gives half its CPU for 3 timings

    times = be.interleaved_passes({"a": 10.0, "b": 12.0, "c": 14.0}, time_one, passes=3)
    assert calls == ["a", "b", "c"] * 3
    assert {k: min(v) for k, v in times.items()} == {"a": 10.0, "b": 12.0, "c": 14.0}
    assert times["b"] == [24.0, 12.0, 12.0]  # the spell is in its first pass only
