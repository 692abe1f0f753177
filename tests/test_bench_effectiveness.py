"""benchmarks/bench_effectiveness.py's resume rules: which long trainings a rerun keeps."""
import json
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


def test_an_older_long_run_keeps_the_length_and_seed_it_was_trained_at():
    state = _state(long_steps=160)
    before = be.stamp_long_runs(state)
    assert before["long_steps"] == 160
    assert "long" not in state["searches"]["tpe-0"]  # moved into the list every detector now keeps
    assert state["searches"]["tpe-0"]["long_runs"] == [{"map": 0.5, "steps": 160, "seed": 0}]  # before --long-seed
    assert state["searches"]["random-0"]["long_runs"] == [{"map": 0.4, "steps": 320, "seed": 3}]  # its own record
    assert state["baseline"]["long_runs"][0]["steps"] == 160 and "long_runs" not in state["searches"]["tpe-1"]


def test_a_rerun_at_another_long_length_retrains_only_what_is_not_at_it():
    state = _state(long_steps=160)
    be.stamp_long_runs(state)
    state["args"] = {"long_steps": 320, "trials": 8}  # the rerun's arguments replace the saved ones
    done = {k: be.long_done(v, 320, seed=3) for k, v in state["searches"].items()}
    assert done == {"tpe-0": False, "random-0": True, "tpe-1": False}
    assert not be.long_done(state["baseline"], 320, seed=0) and be.long_done(state["baseline"], 160, seed=0)


def test_another_long_seed_adds_a_run_beside_the_first_rather_than_replacing_it():
    state = _state(long_steps=320)
    be.stamp_long_runs(state)
    random0 = state["searches"]["random-0"]
    assert not be.long_done(random0, 320, seed=4)
    random0["long_runs"].append({"map": 0.46, "steps": 320, "seed": 4})
    assert be.long_done(random0, 320, seed=3) and be.long_done(random0, 320, seed=4)
    assert be.long_maps(random0, 320, [4, 3]) == [0.46, 0.4]  # in the order asked
    assert not be.long_done(state["searches"]["tpe-0"], 320, seed=3)  # trained on seed 0, not 3


def test_the_gain_over_the_baseline_is_paired_by_long_seed():
    base = {"long_runs": [{"map": 0.50, "steps": 800, "seed": 3}, {"map": 0.40, "steps": 800, "seed": 4}]}
    winner = {"long_runs": [{"map": 0.42, "steps": 800, "seed": 4}, {"map": 0.51, "steps": 800, "seed": 3},
                            {"map": 0.90, "steps": 160, "seed": 3}]}  # another length: not compared
    gains = be.gain_points(winner, base, 800, [3, 4])
    assert [round(g, 6) for g in gains] == [1.0, 2.0]  # seed 3 against seed 3, 4 against 4


def test_long_training_alone_may_run_on_another_processor_but_searching_or_timing_may_not():
    state = {"args": {"trials": 10}, "baseline": {"arch": {}, "measured_ms": 14.0},
             "searches": {k: {"arch": {"n": 1}, "trials_wanted": 10, "measured_ms": 13.0}
                          for k in ("tpe-0", "random-0")}}
    keys = ["tpe-0", "random-0"]
    assert not be.times_here(state, state["args"], keys, trials=10, remeasure=False)
    assert be.times_here(state, state["args"], keys, trials=20, remeasure=False)  # the searches would resume
    assert be.times_here(state, state["args"], keys, trials=10, remeasure=True)
    assert be.times_here(state, state["args"], [*keys, "tpe-1"], trials=10, remeasure=False)  # a new search
    del state["searches"]["random-0"]["measured_ms"]
    assert be.times_here(state, state["args"], keys, trials=10, remeasure=False)  # a winner to time


def test_a_state_from_another_processor_is_refused_in_one_line_when_the_run_would_time(tmp_path):
    (tmp_path / "effectiveness.json").write_text(json.dumps(
        {"args": {"trials": 10, "long_steps": 800}, "processor": "Some Other CPU", "searches": {}}))
    r = subprocess.run([sys.executable, str(Path(be.__file__)), "--seeds", "0", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "measured on Some Other CPU" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert json.loads((tmp_path / "effectiveness.json").read_text())["searches"] == {}  # untouched


def test_a_long_seed_that_a_search_uses_is_refused_in_one_line(tmp_path):
    script = Path(be.__file__)
    r = subprocess.run([sys.executable, str(script), "--seeds", "0", "1", "--long-seeds", "3", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--long-seeds 1 is a search's seed" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "effectiveness.json").exists()


def test_a_reference_width_that_is_no_width_is_refused_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(Path(be.__file__)), "--reference-widths", "0.6", "0",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--reference-widths are width multipliers" in r.stderr
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


def test_a_reference_width_adds_the_hand_designed_detector_and_only_its_long_runs_are_missing():
    from bench_search import baseline_arch
    from nas.models import build_model

    def trained(arch):
        return {"arch": arch, "long_runs": [{"map": 0.6, "steps": 800, "seed": s} for s in (3, 4)]}

    state = {"searches": {"tpe-0": trained({"n": 0})}, "baseline": trained(baseline_arch(0.5, nc=4))}
    assert be.add_references(state, [0.6]) == ["GhostNetV2 x0.6"]
    ref = state["references"]["GhostNetV2 x0.6"]
    assert ref["arch"] == baseline_arch(0.6, nc=4)  # the baseline's family and classes, another width
    params = [sum(p.numel() for p in build_model(a).parameters()) for a in (state["baseline"]["arch"], ref["arch"])]
    assert params[1] > params[0]
    entries = {**state["searches"], "baseline": state["baseline"], "GhostNetV2 x0.6": ref}
    assert be.missing_long_runs(entries, 800, [3, 4]) == [("GhostNetV2 x0.6", 3), ("GhostNetV2 x0.6", 4)]
    ref["long_runs"] = [{"map": 0.65, "steps": 800, "seed": 3}]
    be.add_references(state, [0.6])  # a rerun keeps the reference and its runs
    assert state["references"]["GhostNetV2 x0.6"]["long_runs"] == [{"map": 0.65, "steps": 800, "seed": 3}]
    assert be.missing_long_runs(entries, 800, [3, 4]) == [("GhostNetV2 x0.6", 4)]


def test_a_resumed_search_keeps_its_replaced_winner_and_a_returning_winner_is_not_trained_again():
    runs = [{"map": 0.72, "steps": 800, "seed": 3}]
    first = {"arch": {"n": 3}, "trial": 3, "trials_wanted": 10, "long_runs": runs, "measured_ms": 14.0}
    second = be.resumed_entry(first, {"arch": {"n": 41}, "trial": 41, "trials_wanted": 20})
    assert second["trial"] == 41 and "long_runs" not in second and "measured_ms" not in second
    assert [e["trial"] for e in second["earlier"]] == [3] and second["earlier"][0]["long_runs"] == runs

    second["long_runs"] = [{"map": 0.74, "steps": 800, "seed": 3}]
    second["arch"]["meta"] = {"latency_measured_ms": None}
    # the same detector, whose provenance has since learned its whole-model latency: it stayed
    stayed = be.resumed_entry(json.loads(json.dumps(second)),
                              {"arch": {"n": 41, "meta": {"latency_measured_ms": 14.4}}, "trial": 41, "trials_wanted": 30})
    assert stayed["long_runs"][0]["map"] == 0.74 and [e["trial"] for e in stayed["earlier"]] == [3]

    # #41 measured over budget at the end: the search falls back to #3, trained long already
    back = be.resumed_entry(second, {"arch": {"n": 3, "meta": {"trial": 3}}, "trial": 3, "trials_wanted": 30})
    assert back["long_runs"] == runs and "measured_ms" not in back  # latency is measured again, with the others
    assert [e["trial"] for e in back["earlier"]] == [3, 41]
    assert not be.missing_long_runs({"random-0": back}, 800, [3])


def test_the_first_search_has_no_earlier_winners():
    assert be.resumed_entry({}, {"arch": {"n": 1}, "trial": 1}) == {"arch": {"n": 1}, "trial": 1}


def test_the_table_shows_each_earlier_winner_with_its_long_map_where_it_was_trained():
    trained = {"trial": 3, "trials_wanted": 10, "long_runs": [{"map": 0.70, "steps": 800, "seed": 3},
                                                               {"map": 0.74, "steps": 800, "seed": 4}]}
    untrained = {"trial": 41, "trials_wanted": 20, "long_runs": [{"map": 0.75, "steps": 800, "seed": 3}]}
    entry = {"earlier": [trained, untrained]}
    assert be.earlier_winners(entry, 800, [3, 4]) == "after 10: #3 0.7200, after 20: #41 -"
    assert be.earlier_winners({}, 800, [3]) == ""
