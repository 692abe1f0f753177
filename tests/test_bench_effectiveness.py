"""benchmarks/bench_effectiveness.py's resume rules: which long trainings a rerun keeps."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_effectiveness as be  # noqa: E402


def _state(long_steps: int) -> dict:
    return {"args": {"long_steps": long_steps, "trials": 8},
            "searches": {"tpe-0": {"arch": {"n": 0}, "long": {"map": 0.5}},  # saved before runs recorded steps
                         "random-0": {"arch": {"n": 1}, "long": {"map": 0.4, "steps": 320}},
                         "tpe-1": {"arch": {"n": 2}}},  # searched, not yet trained long
            "baseline": {"arch": {}, "long": {"map": 0.45}}}


def test_an_older_long_run_keeps_the_length_it_was_trained_at():
    state = _state(long_steps=160)
    before = be.stamp_long_runs(state)
    assert before["long_steps"] == 160
    assert state["searches"]["tpe-0"]["long"]["steps"] == 160 and state["baseline"]["long"]["steps"] == 160
    assert state["searches"]["random-0"]["long"]["steps"] == 320  # its own record stands


def test_a_rerun_at_another_long_length_retrains_only_what_is_not_at_it():
    state = _state(long_steps=160)
    be.stamp_long_runs(state)
    state["args"] = {"long_steps": 320, "trials": 8}  # the rerun's arguments replace the saved ones
    done = {k: be.long_done(v, 320) for k, v in state["searches"].items()}
    assert done == {"tpe-0": False, "random-0": True, "tpe-1": False}
    assert not be.long_done(state["baseline"], 320) and be.long_done(state["baseline"], 160)
