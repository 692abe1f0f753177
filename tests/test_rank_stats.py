"""The rank statistics the benchmarks report (benchmarks/rank_stats.py), against values worked by hand."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from rank_stats import bootstrap, kendall_tau_b, ranks, spearman  # noqa: E402


def test_kendall_and_spearman_match_hand_counts():
    # one discordant pair of 10: tau = (9 - 1) / 10; ranks differ by 1 twice: rho = 1 - 6*2 / (5*24)
    assert kendall_tau_b([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == pytest.approx(0.8)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == pytest.approx(0.9)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_ties_share_ranks_and_a_constant_side_has_no_correlation():
    assert ranks([10, 20, 20, 30]).tolist() == [0, 1.5, 1.5, 3]
    # tau-b with ties (scipy.stats.kendalltau([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9128709)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9128709, abs=1e-6)
    assert np.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3])) and np.isnan(spearman([0, 0, 0], [1, 2, 3]))


def test_the_bootstrap_interval_holds_the_estimate_and_narrows_with_agreement():
    rng = np.random.default_rng(0)
    x = np.arange(12.0)
    noisy = x + rng.normal(0, 4, 12)
    lo, hi = bootstrap(kendall_tau_b, x, noisy)
    assert lo <= kendall_tau_b(x, noisy) <= hi and lo < hi
    assert bootstrap(kendall_tau_b, x, x) == (1.0, 1.0)
    assert bootstrap(kendall_tau_b, x, noisy, seed=3) == bootstrap(kendall_tau_b, x, noisy, seed=3)
