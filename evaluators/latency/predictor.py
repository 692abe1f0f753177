"""Predicted latency: a per-block lookup table measured on the target, calibrated on whole models.

Measuring one candidate costs seconds (export, session, timing); a search checks thousands. The
predictor splits an architecture into blocks, measures each distinct block once on the target
(exported alone, batch 1, same backend and threads) and adds their latencies up. The sum misses
what only a whole graph has (operator fusion across block boundaries, one session instead of many,
memory traffic), so `calibrate()` fits `measured = a * sum + b` on a few whole-model measurements.

The table lives in `<cache_dir>/latency-<target.key()>.json` (the key names the processor and
runtime version, not the host, so one folder serves every target and identical machines share a
table), or in a file named by `path` (a portable table, table.py); blocks unknown to it are
measured lazily (`unseen="time"`) or predicted by a model fitted on the blocks it has
(`unseen="model"`, block_model.py: for a table whose device is not here). Several searches share
it: each block is measured once per target. The calibration depends on which architectures it was
fitted on, so the file keeps one per `scope` (the search space's hash).

    predictor = LatencyPredictor(Target.resolve(imgsz=320), "studies/latency")
    predictor.calibrate(some_archs)          # measures their blocks and the whole models (seconds each)
    predictor.predict(arch)                  # ms; well under a millisecond once its blocks are known
    predictor.predict_with_source(arch)      # (ms, "table"), or "table+model" when the model filled in

Blocks are defined in blocks.py; they are timed through a backend (local.py: this machine), with
the discipline of timing.py.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from nas.errors import UserError
from nas.models.arch import load_arch

from .block_model import BlockModel
from .blocks import arch_blocks
from .calibration import Calibration, fit_calibration
from .local import LocalBackend
from .target import Target
from .timing import CANARY_GIVE_UP_S, CANARY_MAX_WAIT_S

FORMAT = 4  # bump when keys, timings or the file's layout change: older tables are then rebuilt
# 4: blocks exported as whole models are (onnxscript's optimizer), the canary exported likewise

BATCH = 16  # blocks timed between two saves of the table (and progress reports)
UNSEEN = ("time", "model")  # what becomes of a block the table lacks: timed now, or the block model's


class LatencyPredictor:
    """Predicted deploy-graph latency (ms) of architectures on one `Target`.

    `measured` counts the blocks this instance timed (a warm cache leaves it at 0). `scope` names
    the family of architectures its calibration is fitted on and used for (the search space's
    hash): a table shared by several spaces keeps one calibration per scope.

    `path`: a table file of `target` (portable: see table.py) instead of the one in `cache_dir`;
    a file of another target or format is refused (UserError), never rebuilt. `unseen`: "time"
    (blocks the table lacks are timed through the backend and added) or "model" (predicted by
    the block model fitted on the table; nothing is timed, nothing added).
    """

    def __init__(self, target: Target, cache_dir: str | os.PathLike | None = None, timing: dict | None = None,
                 max_wait_s: float = CANARY_MAX_WAIT_S, scope: str = "", backend=None,
                 path: str | os.PathLike | None = None, unseen: str = "time"):
        if unseen not in UNSEEN:
            raise ValueError(f"unseen must be one of {UNSEEN}, got {unseen!r}")
        if path is None and cache_dir is None:
            raise ValueError("a LatencyPredictor needs a cache_dir or a table path")
        self.target, self.scope, self.unseen = target, scope, unseen
        self.backend = backend or LocalBackend(target)  # where blocks and whole models are timed
        self.explicit = path is not None  # a file the user named: refused, not rebuilt, when it does not fit
        self.path = Path(path) if path is not None else Path(cache_dir) / f"latency-{target.key()}.json"
        self._model: BlockModel | None = None
        self.modelled: dict[str, float] = {}  # blocks the model predicted (kept apart: they are no timings)
        self.timing = dict(timing or {})  # overrides of time_blocks' defaults
        self.table: dict[str, float] = {}
        self.calibration = Calibration()
        self.calibrations: dict[str, dict] = {}  # every scope's, as on disk
        self.measured = 0
        self.measure_seconds = 0.0  # time spent building the table in this instance
        self.waited_seconds = 0.0   # time spent waiting for a quiet machine
        self.canary = self.backend.canary
        self.max_wait_s, self.busy_until = max_wait_s, 0.0
        self.warned_slow_idle = False
        self.progress = None  # (phase "blocks" | "models", done, total) -> None, while the table builds
        self._load()

    @property
    def calibrated(self) -> bool:
        return self.calibration.n > 0

    @property
    def can_time(self) -> bool:
        """Whether blocks and whole models can be timed on the target (not: a table whose device is
        not here, table.OfflineBackend)."""
        return getattr(self.backend, "connected", True)

    # -- prediction -----------------------------------------------------------------------------

    def blocks(self, arch: dict) -> list[tuple[str, int]]:
        """(block key, count) for every row of `arch` at the target's input size."""
        return arch_blocks(arch, self.target.imgsz)

    def block_sum(self, arch: dict) -> float:
        """Uncalibrated: the sum of the block latencies (ms), timing unknown blocks first (or, with
        unseen="model", taking the block model's prediction for them)."""
        return self._block_sum(arch)[0]

    def _block_sum(self, arch: dict, screen_above: float | None = None) -> tuple[float, bool]:
        """(block sum in ms, whether the block model filled in a block the table lacks).
        `screen_above` (ms, calibrated): when the block model already puts the architecture above
        it, its unseen blocks are not timed (a candidate far over budget is told so in a moment)."""
        blocks = self.blocks(arch)
        missing = [k for k, _ in blocks if k not in self.table]
        if missing and self.unseen == "time" and screen_above is not None and self.table:
            estimate = self._modelled_sum(blocks, missing)
            if self.calibration.apply(estimate) > screen_above:
                return estimate, True
        if missing and self.unseen == "time":
            self._measure(missing)
            missing = [k for k in missing if k not in self.table]
        if not missing:
            return sum(self.table[k] * n for k, n in blocks), False
        return self._modelled_sum(blocks, missing), True

    def _modelled_sum(self, blocks: list[tuple[str, int]], missing: list[str]) -> float:
        """The block sum with the block model's figure for each block the table lacks."""
        model = self.block_model
        for k in missing:
            if k not in self.modelled:
                self.modelled[k] = model.predict(k)
        return sum((self.table[k] if k in self.table else self.modelled[k]) * n for k, n in blocks)

    def predict(self, arch: dict | str | os.PathLike) -> float:
        """Predicted latency (ms) of `arch` (a dict or an architecture YAML) at the target's input size."""
        return self.predict_with_source(arch)[0]

    def predict_with_source(self, arch: dict | str | os.PathLike,
                            screen_above: float | None = None) -> tuple[float, str]:
        """(predicted ms, source): "table" when every block's latency was timed on the target,
        "table+model" when the block model predicted some that the table lacks (see _block_sum
        for `screen_above`)."""
        if not isinstance(arch, dict):
            arch = load_arch(arch)
        ms, modelled = self._block_sum(arch, screen_above)
        return self.calibration.apply(ms), "table+model" if modelled else "table"

    @property
    def block_model(self) -> BlockModel:
        """The block model fitted on the table's timed blocks, refitted once the table has grown."""
        if self._model is None or self._model.fitted_on != len(self.table):
            if not self.table:
                raise UserError(f"latency table {self.path} has no timed block: the block model has nothing "
                                f"to fit on (time some blocks on {self.target.describe()} first)")
            self._model, self.modelled = BlockModel.fit(self.table), {}
        return self._model

    def warm(self, archs) -> int:
        """Measure every block of `archs` not in the table yet; returns how many were measured."""
        missing = {k: None for arch in archs for k, _ in self.blocks(arch) if k not in self.table}
        self._measure(list(missing))
        return len(missing)

    def measure(self, arch: dict, **timing) -> float:
        """Measured latency (ms, median) of the whole detector on this target, on a quiet machine when
        it can be had (`timing`: see measure_latency)."""
        self.wait_quiet()
        return self.backend.measure(arch, **timing)

    def calibrate(self, archs, measured_ms=None, passes: int = 2) -> Calibration:
        """Fit `a * block_sum + b` to whole-model latencies on this target and save it with the table.
        Without `measured_ms` they are measured here: `passes` passes over all the architectures,
        each keeping its smallest median, so that a passing burst of other work on the machine does
        not become part of every later prediction. About 10-20 architectures spanning the space suffice."""
        archs = list(archs)
        self.warm(archs)
        if measured_ms is None:
            total, rounds = len(archs) * max(1, passes), []
            self._report("models", 0, total)
            for _ in range(max(1, passes)):
                rounds.append([self._report("models", len(rounds) * len(archs) + i + 1, total, self.measure(a))
                               for i, a in enumerate(archs)])
            measured_ms = np.min(rounds, axis=0)
        self.calibration = fit_calibration([self.block_sum(a) for a in archs], list(measured_ms))
        self._save()
        return self.calibration

    # -- timing on a quiet machine -------------------------------------------------------------

    def expect_quiet(self) -> None:
        """The work that kept the machine busy is over (a search's trials): wait for quiet again
        before the next timing, even within the 10 minutes `wait_quiet` gives up for."""
        self.busy_until = 0.0

    def wait_quiet(self) -> bool:
        """Wait until the machine is as quiet as the table has seen it (True). A machine still busy
        after `max_wait_s` is timed as it is (False; a warning says so) and not waited for again
        for 10 minutes, so a machine that stays busy (a trial training beside the driver) costs
        a search little."""
        if self.max_wait_s <= 0 or time.monotonic() < self.busy_until:
            return False
        start = time.perf_counter()
        quiet = self.canary.wait(self.max_wait_s)
        self.waited_seconds += time.perf_counter() - start
        if quiet:
            return True
        slow_idle = getattr(self.canary, "slow_idle", 0.0)
        if slow_idle > 0:  # nothing else runs here: no use waiting, and no busy machine to warn of
            if not self.warned_slow_idle:
                self.warned_slow_idle = True
                warnings.warn(f"this machine runs {slow_idle:.0%} slower than its best with nothing else running "
                              f"on it (a shared host, or a changed CPU clock): timing goes on, and blocks timed "
                              f"now may read that much high; a dedicated machine, or the device itself "
                              f"(nas device serve), times steadier", stacklevel=3)
            return False
        self.busy_until = time.monotonic() + CANARY_GIVE_UP_S
        slower = self.canary.last_ms / self.canary.record_ms - 1
        warnings.warn(f"the machine stays busy (a reference block runs {slower:.0%} slower than its best): "
                      f"latencies measured in the next {CANARY_GIVE_UP_S / 60:.0f} minutes may be inflated",
                      stacklevel=3)
        return False

    def _measure(self, keys: list[str]) -> None:
        if not keys:
            return
        start = time.perf_counter()
        keys = list(dict.fromkeys(keys))
        self._report("blocks", 0, len(keys))
        for i in range(0, len(keys), BATCH):
            batch = keys[i:i + BATCH]
            for _ in range(3):  # a batch spoiled by a burst of other work (the canary says so) is timed again
                quiet = self.wait_quiet()
                for k, ms in self.backend.time_blocks(batch, **self.timing).items():
                    self.table[k] = min(self.table.get(k, float("inf")), ms)
                if not quiet or self.canary.quiet():
                    break
            self.measured += len(batch)
            self._save()
            self._report("blocks", min(i + BATCH, len(keys)), len(keys))
        self.measure_seconds += time.perf_counter() - start

    def _report(self, phase: str, done: int, total: int, value=None):
        """Tell `self.progress` (phase, done, total), if set: building a table takes minutes."""
        if self.progress is not None:
            self.progress(phase, done, total)
        return value

    # -- the table on disk ----------------------------------------------------------------------

    def _read(self, quiet: bool = False) -> dict | None:
        """The cache file's content, or None when missing, unreadable, of another format or target.
        The target must have this one's identity (Target.identity: not the host, which the file
        records as information). A file the user named (`path`) is refused instead (UserError)."""
        if not self.path.exists():
            return None
        found = None
        try:
            data = json.loads(self.path.read_text())
            if not (isinstance(data, dict) and isinstance(data.get("target"), dict)
                    and isinstance(data.get("blocks"), dict) and isinstance(data.get("calibrations"), dict)):
                reason = "not a latency table of this format"
            elif data.get("format") != FORMAT:
                reason = f"another format ({data.get('format')}; this version reads {FORMAT})"
            elif (found := Target.from_dict(data["target"])).identity() != self.target.identity():
                reason = f"another target ({found.describe()})"
            else:
                return data
        except (OSError, ValueError, TypeError) as e:
            reason = f"unreadable: {e}"
        if self.explicit:
            if reason.startswith("another target"):
                from .table import mismatch
                raise mismatch(self.path, found, self.target)
            raise UserError(f"latency table {self.path}: {reason}")
        if not quiet:
            warnings.warn(f"latency table {self.path} ignored ({reason}); it will be rebuilt", stacklevel=3)
        return None

    def _load(self) -> None:
        data = self._read()
        if data is None:
            return
        self.table = {k: float(v) for k, v in data["blocks"].items()}
        if data.get("canary_ms"):
            self.canary.record_ms = float(data["canary_ms"])
        self.calibrations = dict(data["calibrations"])
        c = self.calibrations.get(self.scope)
        if c:
            self.calibration = Calibration(int(c["n"]), float(c["a"]), float(c["b"]),
                                           float(c["error"]), float(c["worst"]), float(c.get("floor", 0.0)))

    def _save(self) -> None:
        """Write atomically (temp file + rename), keeping the blocks and other scopes' calibrations
        that another process added meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        on_disk = self._read(quiet=True)
        if on_disk:
            for k, v in on_disk["blocks"].items():
                self.table.setdefault(k, float(v))
            self.canary.record_ms = min(self.canary.record_ms, float(on_disk.get("canary_ms") or "inf"))
            self.calibrations = {**self.calibrations, **on_disk["calibrations"]}  # other scopes: the newest
        if self.calibrated:
            self.calibrations[self.scope] = self.calibration.to_dict()
        data = {"format": FORMAT, "target": self.target.to_dict(), "calibrations": self.calibrations,
                "canary_ms": self.canary.record_ms if math.isfinite(self.canary.record_ms) else None,
                "blocks": self.table}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=0)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
