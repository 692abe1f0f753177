"""Calibration: the block sum misses what only a whole graph has (operator fusion across block
boundaries, one session instead of many, memory traffic), so `predicted = a * block_sum + b` is fitted
on a few whole-model measurements of the same target."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """`predicted = a * block_sum + b`, fitted on `n` whole-model measurements; `error` is the
    mean absolute relative error of the fit on them, `worst` the largest. `floor`: the smallest
    ratio measured / block_sum of those models; a prediction never goes below floor * block_sum (a
    negative intercept, which one session instead of one per block gives, would otherwise predict
    a model smaller than the calibration's below zero)."""

    n: int = 0
    a: float = 1.0
    b: float = 0.0
    error: float = float("nan")
    worst: float = float("nan")
    floor: float = 0.0

    def apply(self, block_sum: float) -> float:
        return max(self.a * block_sum + self.b, self.floor * block_sum)

    def to_dict(self) -> dict:
        return {"n": self.n, "a": self.a, "b": self.b, "error": self.error, "worst": self.worst, "floor": self.floor}


def fit_calibration(block_sums, measured_ms) -> Calibration:
    """Least squares on relative errors: minimise sum(((a*s + b) - m) / m)^2, because the budget
    check and the accuracy goal are both relative (+-10%). One point fits a scale only."""
    s, m = np.asarray(block_sums, dtype=np.float64), np.asarray(measured_ms, dtype=np.float64)
    if s.shape != m.shape or s.size == 0:
        raise ValueError(f"calibration needs as many measurements as architectures (>= 1), got "
                         f"{m.size} for {s.size}")
    if np.any(m <= 0) or np.any(s <= 0):
        raise ValueError("calibration latencies must be positive")
    r = s / m
    if s.size == 1 or np.ptp(s) == 0:
        a, b = float(r.sum() / (r * r).sum()), 0.0
    else:
        design = np.stack((r, 1.0 / m), 1)  # rows scaled by 1/m: relative residuals
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(m), rcond=None)
        a, b = float(a), float(b)
        if a <= 0:  # nonsense from a degenerate set: fall back to a pure scale
            a, b = float(r.sum() / (r * r).sum()), 0.0
    floor = float(np.min(m / s))
    rel = np.abs(np.maximum(a * s + b, floor * s) / m - 1)
    return Calibration(int(s.size), a, b, float(rel.mean()), float(rel.max()), floor)
