"""The replay of benchmarks/bench_pruner.py, on hand-made learning curves (no Ray, no training)."""
import importlib.util
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial


def _load():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pruner.py"
    spec = importlib.util.spec_from_file_location("bench_pruner", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_pruner"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bp = _load()


def linear(number: int, final: float, epochs: int):
    """A curve rising linearly to `final` at the last epoch."""
    return bp.Event(number, "curve", {e: final * e / epochs for e in range(1, epochs + 1)}, final, 2.0)


def test_no_pruner_trains_everything_and_keeps_the_best():
    events = [linear(i, f, 4) for i, f in enumerate([0.3, 0.1, 0.5, 0.2])]
    r = bp.replay(events, "none", 4, "s")
    assert (r["epochs_trained"], r["epochs_full"], r["saved_pct"], r["pruned"]) == (16, 16, 0.0, 0)
    assert r["kept"] and r["best_kept_map"] == 0.5 and r["best_rank"] == 1 and r["winner_pruned_at"] is None


def test_median_waits_for_three_curves_and_judges_past_half_the_proxy():
    # trials 1 and 2 are bad, but fewer than 3 curves reached epoch 3 before them: never pruned;
    # trial 4 is as bad and is pruned at epoch 3, the first past half of 4 (warm-up)
    events = [linear(i, f, 4) for i, f in enumerate([0.4, 0.01, 0.01, 0.5, 0.01])]
    r = bp.replay(events, "median", 4, "s")
    assert r["pruned"] == 1
    assert r["epochs_trained"] == 4 * 4 + 3
    assert r["saved_pct"] == pytest.approx(100 * 1 / 20)
    assert r["kept"] and r["time_saved_pct"] == pytest.approx(r["saved_pct"])


def test_a_later_median_warmup_spares_a_slow_starter():
    # the slow starter is last at epoch 2 (pruned there by median@2) but not at epoch 3
    events = [linear(i, f, 4) for i, f in enumerate([0.3, 0.4, 0.5])]
    events.append(bp.Event(3, "curve", {1: 0.0, 2: 0.01, 3: 0.5, 4: 0.9}, 0.9))
    assert bp.replay(events, "median@2", 4, "s")["winner_pruned_at"] == 2
    late = bp.replay(events, "median@3", 4, "s")
    assert late["kept"] and late["pruned"] == 0 and late["epochs_trained"] == 16
    assert bp.replay(events, "median", 4, "s") == late  # the default judges past half: epoch 3 of 4
    # a bad one is still pruned, at epoch 3 instead of 2
    events.append(linear(4, 0.01, 4))
    late = bp.replay(events, "median@3", 4, "s")
    assert late["pruned"] == 1 and late["epochs_trained"] == 16 + 3


def test_a_pruned_winner_is_reported_lost_with_its_rank():
    events = [linear(i, f, 4) for i, f in enumerate([0.3, 0.4, 0.5])]
    events.append(bp.Event(3, "curve", {1: 0.0, 2: 0.01, 3: 0.5, 4: 0.9}, 0.9))  # a slow starter
    r = bp.replay(events, "median@2", 4, "s")
    assert not r["kept"] and r["winner_pruned_at"] == 2
    assert r["best_kept_map"] == 0.5 and r["lost"] == pytest.approx(0.4) and r["best_rank"] == 2
    assert r["time_saved_pct"] is None  # one curve has no timing


def test_the_last_epoch_is_never_pruned():
    # successive halving prunes at its epoch-1 rung, never at the last epoch
    events = [bp.Event(0, "curve", {1: 0.5, 2: 0.6}, 0.6),
              bp.Event(1, "curve", {1: 0.1, 2: 0.9}, 0.9),   # worse than trial 0 at epoch 1: pruned there
              bp.Event(2, "curve", {1: 0.9, 2: 0.0}, 0.0)]   # best at epoch 1, worst at the end: finishes
    r = bp.replay(events, "sha", 2, "s")
    assert r["epochs_trained"] == 2 + 1 + 2 and r["pruned"] == 1
    assert not r["kept"] and r["winner_pruned_at"] == 1


def test_events_keep_trial_numbers_and_refuse_pruned_studies():
    study = optuna.create_study(direction="maximize")
    dist = {}
    study.add_trial(create_trial(value=0.4, intermediate_values={1: 0.1, 2: 0.4}, params={}, distributions=dist,
                                 user_attrs={"train_s": 6.0, "epochs_run": 2}))
    study.add_trial(create_trial(value=0.0, params={}, distributions=dist))          # over budget: no curve
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions=dist))
    study.add_trial(create_trial(value=0.2, intermediate_values={1: 0.05, 2: 0.2}, params={}, distributions=dist))
    events = bp.events_of(study.trials)
    assert [(e.number, e.kind) for e in events] == [(0, "curve"), (1, "untrained"), (2, "fail"), (3, "curve")]
    assert events[0].sec_per_epoch == 3.0 and events[0].values == {1: 0.1, 2: 0.4}
    r = bp.replay(events, "median", 2, "s")
    assert (r["trials"], r["epochs_full"], r["best_noprune"], r["kept"]) == (2, 4, 0.4, True)

    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.0}, params={},
                                 distributions=dist))
    with pytest.raises(ValueError, match="no-prune"):
        bp.events_of(study.trials)


def test_orders_are_reproducible_permutations():
    events = [linear(i, 0.1 * i, 3) for i in range(6)]
    a, b = bp.orders(events, 5, seed=7), bp.orders(events, 5, seed=7)
    assert [[e.number for e in p] for p in a] == [[e.number for e in p] for p in b]
    assert all(sorted(e.number for e in p) == list(range(6)) for p in a)


def test_from_study_splits_at_the_last_colon():
    assert bp.parse_from_study("sqlite:///tmp/s/study.db:s-1") == ("sqlite:///tmp/s/study.db", "s-1")
    assert bp.parse_from_study("postgresql://u:p@host:5432/db:name") == ("postgresql://u:p@host:5432/db", "name")
    with pytest.raises(Exception):
        bp.parse_from_study("no-colon")
