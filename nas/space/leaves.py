"""The leaves of a space YAML: a fixed value, a list of choices, or a `{low, high, step?, log?}` range.

    parse_leaf(raw, "stages[2].width", int, check=positive, rule="a positive int")
    -> Fixed(64) | Choice((48, 64, 96)) | Range(40, 104, step=8)

Each leaf knows its Optuna distribution and how to ask a trial for a value. Every value a leaf
can take is checked when it is parsed, so a search never meets a value the model cannot build.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import optuna

from nas.errors import UserError

RANGE_KEYS = ("low", "high", "step", "log")
MAX_CHECKED_VALUES = 10_000  # an int range longer than this has only its ends checked


@dataclass(frozen=True)
class Fixed:
    """A value the search does not touch; it never becomes a trial parameter."""
    value: Any

    def distribution(self) -> None:
        return None

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return _same(value, self.value)


@dataclass(frozen=True)
class Choice:
    """A categorical parameter."""
    choices: tuple

    def distribution(self) -> optuna.distributions.CategoricalDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return any(_same(value, c) for c in self.choices)


@dataclass(frozen=True)
class Range:
    """An int range when low and high are ints, else a float range. `step` None means 1 for ints
    and continuous for floats."""
    low: int | float
    high: int | float
    step: int | float | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.is_int:
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> int | float:
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.is_int else (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        n = (value - self.low) / self.step
        return abs(n - round(n)) < 1e-6

    def values(self) -> list[int]:
        """Every value of an int range (the ends only when it is very long)."""
        step = self.step or 1
        if (self.high - self.low) // step >= MAX_CHECKED_VALUES:
            return [self.low, self.high]
        return list(range(self.low, self.high + 1, step))


Leaf = Fixed | Choice | Range


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: True is not 1 here, 3 and 3.0 are the same number."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def kind_name(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an int", float: "a number", bool: "a bool (true/false)", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def type_ok(value: Any, kind: type | tuple) -> bool:
    """isinstance, except that bool (an int subclass) only passes where bool is asked for and an
    int passes where a float is asked for."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def parse_leaf(raw: Any, path: str, kind: type | tuple, check: Callable[[Any], bool] | None = None,
               rule: str = "", searchable: bool = True) -> Leaf:
    """A leaf from its YAML value, with every value it can take checked against `kind` and `check`.
    `searchable=False` keys only accept a fixed value. Errors name `path`."""
    if isinstance(raw, list) or isinstance(raw, dict):
        if not searchable:
            raise UserError(f"{path}: is fixed, not searchable: give one {kind_name(kind)}"
                            + (f" ({rule})" if rule else "") + f", not {raw!r}")
        return (_parse_choices if isinstance(raw, list) else _parse_range)(raw, path, kind, check, rule)
    _check_value(raw, path, kind, check, rule)
    return Fixed(raw)


def _check_value(value: Any, path: str, kind, check, rule: str, what: str = "") -> None:
    if not type_ok(value, kind):
        raise UserError(f"{path}: {what}expected {kind_name(kind)}, got {value!r}")
    if check is not None and not check(value):
        raise UserError(f"{path}: {what}must be {rule}, got {value!r}")


def _parse_choices(raw: list, path: str, kind, check, rule: str) -> Choice:
    if not raw:
        raise UserError(f"{path}: empty choice list; give at least one value")
    for i, value in enumerate(raw):
        _check_value(value, path, kind, check, rule, what=f"choice {i} ")
        if any(_same(value, earlier) for earlier in raw[:i]):
            raise UserError(f"{path}: choice {value!r} is listed twice")
    return Choice(tuple(raw))


def _parse_range(raw: dict, path: str, kind, check, rule: str) -> Range:
    unknown = [k for k in raw if k not in RANGE_KEYS]
    if unknown:
        raise UserError(f"{path}: unknown range key(s) {unknown}; allowed: {', '.join(RANGE_KEYS)}")
    missing = [k for k in ("low", "high") if k not in raw]
    if missing:
        raise UserError(f"{path}: a range needs {' and '.join(missing)} (keys: low, high, step?, log?)")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if bool in kinds or str in kinds:
        raise UserError(f"{path}: a range needs numbers; give {kind_name(kind)} or a list of choices")
    low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
    for key, value in (("low", low), ("high", high)):
        if not type_ok(value, kind):
            raise UserError(f"{path}.{key}: expected {kind_name(kind)}, got {value!r}")
    if not isinstance(log, bool):
        raise UserError(f"{path}.log: expected a bool (true/false), got {log!r}")
    is_int = isinstance(low, int) and isinstance(high, int)
    if step is not None:
        if log:
            raise UserError(f"{path}: log and step cannot be combined (Optuna samples a log range continuously)")
        if not type_ok(step, int if is_int else float):
            raise UserError(f"{path}.step: expected {'an int (low and high are ints)' if is_int else 'a number'}, "
                            f"got {step!r}")
        if step <= 0:
            raise UserError(f"{path}.step: must be > 0, got {step!r}")
    if low > high:
        raise UserError(f"{path}: low {low} > high {high}")
    if log and low <= 0:
        raise UserError(f"{path}: a log range needs low > 0, got low {low}")
    if not is_int:  # a float range: keep both ends floats so Optuna and `contains` agree
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    leaf = Range(low, high, step, log)
    if step is not None and not leaf.contains(high):
        raise UserError(f"{path}: high {high} is not low {low} plus a multiple of step {step}")
    # Every value of an int range is checked (odd kernels need an odd low and an even step);
    # a float range is checked at its ends (the float rules here are monotonic bounds).
    for value in leaf.values() if is_int else (low, high):
        if check is not None and not check(value):
            raise UserError(f"{path}: range [{low}, {high}]" + (f" step {step}" if step else "")
                            + f" includes {value!r}; values must be {rule}")
    return leaf
