"""Portable latency tables: a table file timed on one device, used by searches anywhere.

A table is keyed by what it was timed on (`Target.identity()`: device, backend, threads, input
size, processor, runtime version), not by the host, so identical machines share one. A team
profiles its device once (`nas latency-table SPACE -o FILE`, or copies the file a search left in
`studies/latency/`), and a search given `--latency-table FILE` predicts against that device:

- on a machine with the table's identity, the blocks it lacks are timed here and added to it;
- anywhere else (the device is not here), nothing can be timed: the blocks it lacks are predicted
  by the block model (block_model.py) fitted on the blocks it has, and the trial says so
  (`latency_source: table+model`). Nothing measured here ever enters the file.

A table whose target differs from the one asked for (a flag, or the input size) is refused with
one line naming both, never mixed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

from nas.errors import UserError

from .target import Target
from .timing import Canary


def read_table(path: str | os.PathLike) -> dict:
    """A table file's content; a UserError naming the file when it is missing or not a table."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency table {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"latency table {path}: unreadable ({e})") from None
    if not (isinstance(data, dict) and isinstance(data.get("target"), dict) and isinstance(data.get("blocks"), dict)):
        raise UserError(f"latency table {path}: not a latency table (no target and blocks)")
    return data


def mismatch(path, found: Target, asked: Target) -> UserError:
    """The one-line refusal of a table timed on another target than the one asked for."""
    return UserError(f"latency table {path} was timed on {found.describe()}, not on the target asked for, "
                     f"{asked.describe()}: use a table of that target, or ask for the table's")


def table_target(path: str | os.PathLike, device: str, backend: str | None, threads: int | None,
                 imgsz: int) -> Target:
    """The target a search with `--latency-table path` predicts for: the table's, at `imgsz`.
    The latency flags the user set must agree with it (None: not set); else a UserError naming
    both targets. The input size is checked when the table is opened (LatencyPredictor)."""
    found = Target.from_dict(read_table(path)["target"])
    asked = dataclasses.replace(found, device=device, backend=backend or found.backend,
                                threads=found.threads if threads is None else int(threads))
    if asked.identity() != found.identity():
        raise mismatch(path, found, asked)
    return dataclasses.replace(found, imgsz=int(imgsz))


def here(target: Target) -> bool:
    """Whether this machine is `target` (same identity): then blocks can be timed here."""
    try:
        local = Target.resolve(target.device, target.backend, target.threads, target.imgsz)
    except UserError:  # e.g. a cuda target on a machine without one
        return False
    return local.identity() == target.identity()


class OfflineBackend:
    """The backend of a target that is not here: nothing can be timed or measured."""

    connected = False

    def __init__(self, target: Target):
        self.target = target
        self.canary = Canary(self._refuse)

    def _refuse(self, *args, **kwargs):
        raise UserError(f"cannot time on {self.target.describe()}: that device is not connected here "
                        f"(a portable table predicts the blocks it lacks with the block model)")

    time_blocks = measure = _refuse


def open_table(path: str | os.PathLike, target: Target, scope: str = "", **kwargs):
    """A LatencyPredictor on the table file `path` for `target` (refused unless the file is that
    target's): blocks it lacks are timed here when this machine is the target, else predicted by
    the block model. Without a device, a table with no calibration for `scope` uses the one of the
    scope fitted on the most architectures, with a warning (none: the uncalibrated block sum)."""
    from .calibration import Calibration
    from .predictor import LatencyPredictor

    if here(target):
        return LatencyPredictor(target, path=path, scope=scope, **kwargs)
    predictor = LatencyPredictor(target, path=path, scope=scope, unseen="model", backend=OfflineBackend(target),
                                 **kwargs)
    if not predictor.calibrated:
        fits = sorted(predictor.calibrations.items(), key=lambda kv: (-int(kv[1].get("n", 0)), kv[0]))
        if fits:
            name, c = fits[0]
            predictor.calibration = Calibration(int(c["n"]), float(c["a"]), float(c["b"]), float(c["error"]),
                                                float(c["worst"]), float(c.get("floor", 0.0)))
            warnings.warn(f"latency table {path} has no calibration for this space; using the one fitted "
                          f"on {c['n']} architectures of another (scope {name or 'none'})", stacklevel=2)
        else:
            warnings.warn(f"latency table {path} has no calibration: predictions are uncalibrated block sums",
                          stacklevel=2)
    return predictor
