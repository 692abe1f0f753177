"""The budget check of the search: each candidate's latency on the target, before any training.

Default: the per-block lookup-table predictor, cached per target in a folder all studies share
(`studies/latency`) and calibrated once per space against a few whole-model measurements;
`latency: measured` measures every candidate's whole deploy graph instead (exact, slower).
"""
from __future__ import annotations

import time
from pathlib import Path

from evaluators.latency import Target, measure_latency
from nas.models import build_model

CALIBRATION_ARCHS = 8


class LatencyOracle:
    def __init__(self, mode: str, device: str, backend: str | None, threads: int | None, cache_dir: Path,
                 space=None, nc: int = 80, seed: int = 0, log=print):
        self.mode, self.device, self.backend, self.threads = mode, device, backend, threads
        self.cache_dir, self.space, self.nc, self.seed, self.log = Path(cache_dir), space, nc, seed, log
        self.predictors: dict[int, object] = {}
        self.target(320)  # validate device/backend/threads now: a bad flag fails before any trial

    def target(self, imgsz: int) -> Target:
        return Target.resolve(self.device, self.backend, self.threads, imgsz)

    def __call__(self, arch: dict) -> tuple[float, str, dict]:
        """(latency ms, "predicted" or "measured", target description)."""
        imgsz = arch["imgsz"]
        if self.mode == "measured":
            r = measure_latency(build_model(arch), imgsz, self.device, self.backend, self.threads)
            return r.median_ms, "measured", r.target.to_dict()
        predictor = self.predictors.get(imgsz) or self._predictor(imgsz)
        return predictor.predict(arch), "predicted", predictor.target.to_dict()

    def measure_whole(self, arch: dict) -> tuple[float, dict]:
        """(ms, target description) of the whole detector measured on the target, on a quiet
        machine when it can be had: what the end of a search checks its winners with."""
        if self.mode == "measured":
            return self(arch)[0], self.target(arch["imgsz"]).to_dict()
        predictor = self.predictors.get(arch["imgsz"]) or self._predictor(arch["imgsz"])
        return predictor.measure(arch), predictor.target.to_dict()

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
        predictor = LatencyPredictor(self.target(imgsz), self.cache_dir, scope=scope)
        if not predictor.calibrated and self.space is not None:
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
