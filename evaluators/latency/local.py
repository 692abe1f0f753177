"""The local backend: blocks and whole models timed on this machine (onnxruntime or torch).

A backend is what a `LatencyPredictor` times through; each has the same three calls:
    backend.time_blocks(keys, **timing) -> {key: ms}      # interleaved best-of-bursts
    backend.measure(arch, **timing) -> ms                 # the whole detector
    backend.canary                                        # a timing.Canary on the same device
"""
from __future__ import annotations

import json

import numpy as np
import torch

from nas.models import build_model

from ..onnx_export import export_onnx
from .blocks import CANARY_KEY, block_onnx, build_block
from .measure import measure_latency
from .ort import session_opener
from .target import Target
from .timing import Canary, Opener, time_calls, time_interleaved

MEASURE_TIMING = dict(warmup=10, runs=50, min_time_s=1.0)  # measure_latency's defaults


def block_runner(key: str, target: Target) -> Opener:
    """An opener (timing.Opener) of the block on `target`: in onnxruntime the block is exported
    once, and each call opens a fresh session on it; in torch, its deploy-graph module."""
    if target.backend == "onnxruntime":
        onnx_bytes, feeds = block_onnx(key)
        providers = ["CUDAExecutionProvider"] if target.device == "cuda" else ["CPUExecutionProvider"]
        return session_opener(onnx_bytes, feeds, target.threads, providers)
    module, inputs = build_block(key)
    module, inputs = module.to(target.device), [x.to(target.device) for x in inputs]

    def run():
        with torch.inference_mode():
            return module(*inputs)
    return lambda: run


def time_blocks(keys: list[str], target: Target, rounds: int = 3, warmup: int = 3, runs: int = 5,
                min_time_s: float = 0.01) -> dict[str, float]:
    """Latency (ms) of each block alone on `target` (timing.time_interleaved's discipline)."""
    sync = torch.cuda.synchronize if target.device == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    if target.backend == "torch":
        torch.set_num_threads(target.threads)
    try:
        openers = {key: block_runner(key, target) for key in keys}
        return time_interleaved(openers, rounds, warmup, runs, min_time_s, sync)
    finally:
        torch.set_num_threads(previous)


class LocalBackend:
    """Times on this machine, in this process."""

    def __init__(self, target: Target):
        self.target = target
        self.canary = Canary(_lazy(lambda: block_runner(CANARY_KEY, target)))
        self._exported: dict[str, tuple[bytes, dict]] = {}  # arch -> ONNX: calibration times each twice

    def time_blocks(self, keys: list[str], **timing) -> dict[str, float]:
        return time_blocks(keys, self.target, **timing)

    def measure(self, arch: dict, **timing) -> float:
        """Measured latency (ms, median) of the whole detector on this machine (measure_latency's
        timing); in onnxruntime each architecture is exported once, however often it is timed."""
        t = self.target
        if t.backend != "onnxruntime":
            return measure_latency(build_model(arch), t.imgsz, t.device, t.backend, t.threads, **timing).median_ms
        key = json.dumps(arch, sort_keys=True)
        if key not in self._exported:
            x = torch.rand((1, 3, t.imgsz, t.imgsz), generator=torch.Generator().manual_seed(0))
            self._exported[key] = export_onnx(build_model(arch), None, t.imgsz), {"images": x.numpy()}
        providers = ["CUDAExecutionProvider"] if t.device == "cuda" else ["CPUExecutionProvider"]
        run = session_opener(*self._exported[key], t.threads, providers)()
        times = time_calls(run, **{**MEASURE_TIMING, **timing})
        del run  # its session must not spin beside what is timed next
        return float(np.median(times))


def _lazy(make_opener) -> Opener:
    """An opener built on first use: exporting the canary costs a second nobody may need."""
    made = []

    def open_runner():
        if not made:
            made.append(make_opener())
        return made[0]()
    return open_runner
