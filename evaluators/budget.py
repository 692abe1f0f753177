"""Latency budgets as the user writes them: `15ms`, `2.5 ms`, `800us`, `0.02s` -> milliseconds.

A bare number is refused on purpose: "15" could mean 15 ms or 15 s, and guessing wrong silently
ruins a whole search.
"""
from __future__ import annotations

import math
import re

from nas.errors import UserError

# Unit (lower case) -> milliseconds. Both micro signs (U+00B5 and Greek mu U+03BC) are accepted.
_UNITS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "\u00b5s": 1e-3, "\u03bcs": 1e-3}
_BUDGET = re.compile(r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(?P<unit>\S*)", re.IGNORECASE)


def parse_budget(text: str) -> float:
    """A duration with its unit (ms, us/\u00b5s, s; any case) -> milliseconds. Anything else is a UserError."""
    raw = str(text).strip()
    match = _BUDGET.fullmatch(raw)
    if match is None:
        raise UserError(f"budget {text!r} is not a duration: write it like 15ms, 800us or 0.02s")
    number, unit = float(match["number"]), match["unit"].lower()
    if not unit:
        raise UserError(f"budget {text!r} has no unit ({match['number']} in what unit?): use {match['number']}ms")
    if unit not in _UNITS:
        raise UserError(f"budget {text!r} has an unknown unit {match['unit']!r}: use ms, us or s")
    ms = number * _UNITS[unit]
    if not math.isfinite(ms) or ms <= 0:
        raise UserError(f"budget {text!r} must be a positive, finite duration")
    return ms


def format_budget(ms: float) -> str:
    """Milliseconds -> the shortest natural spelling, e.g. 15.0 -> '15ms', 0.8 -> '800us', 2000 -> '2s'.

    Used in default study names, so it must be stable and round-trip through parse_budget().
    """
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(f"budget must be positive and finite, got {ms!r}")
    if ms < 1:
        value, unit = ms * 1000, "us"
    elif ms >= 1000:
        value, unit = ms / 1000, "s"
    else:
        value, unit = ms, "ms"
    return f"{round(value, 6):g}{unit}"
