"""benchmarks/bench_search.py's timing: where a search's wall time went, from the trials it ran."""
import math
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_search as bs  # noqa: E402


def _trial(start: float, end: float, train_s: float, driver_s: float = 0.25):
    return SimpleNamespace(datetime_start=datetime.fromtimestamp(start), datetime_complete=datetime.fromtimestamp(end),
                           user_attrs={"trained": True, "train_s": train_s, "driver_s": driver_s,
                                       "latency_s": 0.5, "latency_blocks": 4})


def test_timing_splits_the_wall_time_of_two_workers():
    # 4 trials of this run (and one of an earlier run, not timed) of 10 s on 2 workers in a 30 s search: 10 s outside the trials, 3 s of it before and after
    trials = [_trial(1002, 1012, 10), _trial(1002, 1012, 10), _trial(1013, 1023, 10), _trial(1014, 1025, 10)]
    t = bs.timing([_trial(10, 900, 890)] + trials, started=1000.0, ended=1026.0, workers=2)
    assert t["timed_trials"] == 4 and t["mean_trial_s"] == pytest.approx(10)
    assert t["start_stop_s"] == pytest.approx(2 + 1)
    assert t["overhead_per_trial_s"] == pytest.approx((26 - 20) / 4)
    assert t["machinery_per_trial_s"] == pytest.approx((26 - 20 - 3 - 1) / 4)


def test_a_search_that_ran_no_trial_has_no_timing_rather_than_a_negative_one():
    # a resumed study already at its target: its old trials must not be timed against this run's wall time
    earlier = [_trial(10, 20, 10), _trial(21, 31, 10)]
    t = bs.timing(earlier, started=1000.0, ended=1005.0, workers=2)
    assert t["timed_trials"] == 0 and t["wall_s"] == pytest.approx(5)
    assert all(math.isnan(t[k]) for k in ("overhead_per_trial_s", "start_stop_s", "machinery_per_trial_s"))


def test_the_baseline_is_scaled_by_its_best_of_three_passes_not_by_a_busy_one(monkeypatch):
    import evaluators.latency as latency

    passes = iter([22.8, 14.7, 14.9])  # one pass in a burst of other work, then the machine is quiet
    monkeypatch.setattr(latency, "measure_latency", lambda *a, **kw: SimpleNamespace(median_ms=next(passes)))
    width, arch, ms = bs.scaled_baseline(15.0, nc=1, threads=1)
    assert (width, ms) == (1.0, 14.7)  # full width fits: not shrunk by the burst
    assert arch["imgsz"] == 320


def test_the_baseline_shrinks_until_it_fits(monkeypatch):
    import evaluators.latency as latency

    by_width = iter([16.0] * 3 + [15.5] * 3 + [13.9, 14.2, 14.0])  # 1.0x, 0.9x over; 0.8x fits
    monkeypatch.setattr(latency, "measure_latency", lambda *a, **kw: SimpleNamespace(median_ms=next(by_width)))
    width, _, ms = bs.scaled_baseline(15.0, nc=1, threads=1)
    assert (width, ms) == (0.8, 13.9)
