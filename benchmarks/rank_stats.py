"""Rank correlations for the benchmarks (numpy only: scipy is not a dependency).

    kendall_tau_b(x, y)            # ties counted as in scipy.stats.kendalltau
    spearman(x, y)                 # Pearson correlation of average ranks
    bootstrap(stat, x, y, n=2000)  # (low, high): 95% percentile interval over resampled pairs
"""
from __future__ import annotations

import numpy as np


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b over all pairs (nan when either side is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    upper = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[:, None] - x[None, :])[upper], np.sign(y[:, None] - y[None, :])[upper]
    denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / denominator) if denominator else float("nan")


def ranks(x) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 0-based."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for value in np.unique(x):
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def spearman(x, y) -> float:
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap(stat, x, y, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of stat(x, y) over `n` resamples of the (x, y) pairs; resamples with
    a constant side (no ranking) are skipped."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        i = rng.integers(0, len(x), len(x))
        v = stat(x[i], y[i])
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))
