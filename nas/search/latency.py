"""The budget check of the search: each candidate's latency on the target, before any training.

Default: the per-block lookup-table predictor, cached per target in a folder all studies share
(`studies/latency`) and calibrated once per space against a few whole-model measurements;
`latency: measured` measures every candidate's whole deploy graph instead (exact, slower).
With a target URL (`--latency-target`), both time on that device's server (`nas device serve`)
and the tables are keyed by the device. With a table file (`--latency-table`), predictions use it
(evaluators/latency/table.py): its blocks, timed on its device, and for the blocks it lacks,
timings here when this machine is that device, else the block model.
"""
from __future__ import annotations

import time
from pathlib import Path

from evaluators.latency import Target, measure_latency
from nas.errors import UserError
from nas.models import build_model

CALIBRATION_ARCHS = 8
SCREEN = 1.5  # see LatencyOracle.screen_above_ms


class LatencyOracle:
    def __init__(self, mode: str, device: str, backend: str | None, threads: int | None, cache_dir: Path,
                 space=None, nc: int = 80, seed: int = 0, log=print, target_url: str | None = None,
                 token_file: str | None = None, table: str | None = None):
        self.mode, self.device, self.backend, self.threads = mode, device, backend, threads
        self.cache_dir, self.space, self.nc, self.seed, self.log = Path(cache_dir), space, nc, seed, log
        self.predictors: dict[int, object] = {}
        # Candidates the block model puts above this (ms) are over budget without timing their new
        # blocks: set by the search to SCREEN x its budget, so only a gross error would mislead it.
        self.screen_above_ms: float | None = None
        self.remote = None  # a device server (evaluators.latency.remote.Device): where everything is timed
        self.backends: dict[int, object] = {}  # imgsz -> its RemoteBackend
        if target_url:
            from evaluators.latency.remote import Device, read_token

            if device != "cpu" or backend not in (None, "onnxruntime"):
                raise UserError("--latency-target times with onnxruntime on the device (its own execution "
                                "provider): drop --latency-device and --latency-backend")
            self.remote = Device(target_url, read_token(token_file))  # one request: unreachable or refused fails now
            t = self.target(320)
            log(f"latency target {self.remote.url}: {t.processor} ({t.hostname}), onnxruntime "
                f"{t.onnxruntime_version}, {t.threads} thread{'s' * (t.threads != 1)}; tables keyed {t.key()}")
        self.table = Path(table) if table else None  # a portable table file (--latency-table)
        self.target(320)  # validate device/backend/threads now: a bad flag fails before any trial

    def target(self, imgsz: int) -> Target:
        if self.remote is not None:
            return self.remote.target(imgsz, self.threads)
        if self.table is not None:  # the table's target, which the flags set must agree with
            from evaluators.latency.table import table_target

            return table_target(self.table, self.device, self.backend, self.threads, imgsz)
        return Target.resolve(self.device, self.backend, self.threads, imgsz)

    def timing_backend(self, imgsz: int):
        """Where blocks and whole models are timed: the device server's RemoteBackend, or None (this
        machine: the predictor's own LocalBackend)."""
        if self.remote is None:
            return None
        if imgsz not in self.backends:
            from evaluators.latency.remote import RemoteBackend

            self.backends[imgsz] = RemoteBackend(self.remote, imgsz=imgsz, threads=self.threads)
        return self.backends[imgsz]

    def __call__(self, arch: dict) -> tuple[float, str, dict]:
        """(latency ms, source, target description); source: "measured" (the whole model), "table"
        (the sum of timed blocks) or "table+model" (the block model filled in blocks nobody timed)."""
        imgsz = arch["imgsz"]
        if self.mode == "measured":
            if self.remote is not None:
                remote = self.timing_backend(imgsz)
                return remote.measure(arch), "measured", remote.target.to_dict()
            r = measure_latency(build_model(arch), imgsz, self.device, self.backend, self.threads)
            return r.median_ms, "measured", r.target.to_dict()
        predictor = self.predictors.get(imgsz) or self._predictor(imgsz)
        return (*predictor.predict_with_source(arch, self.screen_above_ms), predictor.target.to_dict())

    def measure_whole(self, arch: dict) -> tuple[float, dict]:
        """(ms, target description) of the whole detector measured on the target, on a quiet
        machine when it can be had: what the end of a search checks its winners with."""
        if self.mode == "measured":
            return self(arch)[0], self.target(arch["imgsz"]).to_dict()
        predictor = self.predictors.get(arch["imgsz"]) or self._predictor(arch["imgsz"])
        return predictor.measure(arch), predictor.target.to_dict()

    def expect_quiet(self) -> None:
        """The trials are over: the next measurements wait for a quiet machine again."""
        for predictor in self.predictors.values():
            predictor.expect_quiet()

    @property
    def can_measure(self) -> bool:
        """Whether whole models can be measured on the target: not with a table whose device is not here."""
        return self.mode == "measured" or all(p.can_time for p in self.predictors.values())

    @property
    def blocks_measured(self) -> int:
        """Blocks timed so far (a candidate whose blocks the table knows adds none)."""
        return sum(p.measured for p in self.predictors.values())

    @property
    def waited_seconds(self) -> float:
        """Time spent so far waiting for a quiet machine before timing blocks."""
        return sum(p.waited_seconds for p in self.predictors.values())

    def prepare(self, imgsz: int) -> None:
        """Load or build (calibrate) the predictor of `imgsz` now rather than in the first trial."""
        if self.mode == "predicted" and imgsz not in self.predictors:
            self._predictor(imgsz)

    def _predictor(self, imgsz: int):
        from evaluators.latency.predictor import LatencyPredictor

        start = time.perf_counter()
        scope = self.space.hash if self.space is not None else ""
        if self.table is not None and self.remote is None:
            from evaluators.latency.table import open_table

            predictor = open_table(self.table, self.target(imgsz), scope)  # timed here, or the block model
            if not predictor.can_time:
                self.log(f"latency table {self.table}: timed on {predictor.target.describe()}, not here: "
                         f"blocks it lacks are predicted by the block model")
        else:
            predictor = LatencyPredictor(self.target(imgsz), self.cache_dir, scope=scope,
                                         backend=self.timing_backend(imgsz), path=self.table)
        if not predictor.calibrated and self.space is not None and predictor.can_time:
            self.log(f"calibrating the latency predictor at {imgsz}px on {CALIBRATION_ARCHS} architectures "
                     f"of the space (once per target and space; cached in {self.cache_dir})")
            archs = [self.space.random_arch(self.seed + 1000 + i, self.nc) for i in range(CALIBRATION_ARCHS)]
            for a in archs:
                a["imgsz"] = imgsz
            predictor.progress = TableProgress(self.log)
            fit = predictor.calibrate(archs)
            predictor.progress = None
            self.log(f"latency predictor ready: {len(predictor.table)} blocks, fit error {fit.error:.1%} "
                     f"({time.perf_counter() - start:.0f} s)")
        self.predictors[imgsz] = predictor
        return predictor


class TableProgress:
    """Lines with an ETA while a latency table builds (minutes on a fresh machine): one when a
    phase starts, then at most one every `every_s` seconds, as plain lines so that they read the
    same on a terminal and in a log."""

    PHASES = {"blocks": "timing the blocks of the calibration architectures",
              "models": "measuring the calibration architectures whole"}

    def __init__(self, log, every_s: float = 10.0):
        self.log, self.every_s = log, every_s
        self.phase, self.started, self.last = None, 0.0, 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if phase != self.phase:
            self.phase, self.started, self.last = phase, now, now
            self.log(f"latency table: {self.PHASES.get(phase, phase)} ({total})")
            return
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        left = (now - self.started) / max(done, 1) * (total - done)
        eta = f", about {_duration(left)} left" if done < total else f", {_duration(now - self.started)}"
        self.log(f"latency table: {phase} {done}/{total}{eta}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
