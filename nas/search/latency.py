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
            fit = predictor.calibrate(archs)
            self.log(f"latency predictor ready: {len(predictor.table)} blocks, fit error {fit.error:.1%} "
                     f"({time.perf_counter() - start:.0f} s)")
        self.predictors[imgsz] = predictor
        return predictor
