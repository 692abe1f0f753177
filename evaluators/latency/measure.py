"""Measured latency of the deploy graph on a named target.

A `Target` says where and how a figure was measured (device, backend, threads, input size, plus the
software and hardware it ran on); every `LatencyResult` carries its target, and `Target.key()` is
what latency caches are keyed on.

On CPU the default backend is onnxruntime: eager PyTorch at batch 1 mostly measures framework
overhead (GhostNetV2 1.0x trunk at 320 px on 2 cores: 38 ms eager against 9.9 ms in onnxruntime),
which would rank candidates wrongly. On CUDA the default is eager PyTorch.

    result = measure_latency(model, 320)                      # cpu, onnxruntime, all physical cores
    result.median_ms, result.p90_ms, result.target.key()
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

from ..onnx_export import DeployGraph, deploy_copy, export_onnx
from .ort import ort_session
from .target import Target
from .timing import time_calls

@dataclass(frozen=True)
class LatencyResult:
    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    runs: int
    target: Target

    @classmethod
    def from_times(cls, times_ms, target: Target) -> LatencyResult:
        t = np.asarray(times_ms, dtype=np.float64)
        p10, median, p90 = np.percentile(t, [10, 50, 90])
        return cls(float(median), float(t.mean()), float(p10), float(p90), float(t.std()), int(t.size), target)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"] = self.target.to_dict()
        return d


def measure_latency(model: nn.Module, imgsz: int, device: str = "cpu", backend: str | None = None,
                    threads: int | None = None, *, warmup: int = 10, runs: int = 50, min_time_s: float = 1.0,
                    max_runs: int = 2000, decode: bool = True, input_shape=None) -> LatencyResult:
    """Latency of `model`'s deploy graph (re-parameterized copy, eval, float32, batch 1) at `imgsz`.

    Detectors are timed with their decode (what `nas onnx` ships; NMS excluded); `decode=False`
    times the raw forward. `input_shape` replaces (1, 3, imgsz, imgsz) to time a module that does
    not take images, such as a single block. `model` itself is never modified.
    """
    target = Target.resolve(device, backend, threads, imgsz)
    shape = tuple(input_shape) if input_shape is not None else (1, 3, target.imgsz, target.imgsz)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    timing = dict(warmup=warmup, runs=runs, min_time_s=min_time_s, max_runs=max_runs)
    if target.backend == "onnxruntime":
        times = _time_onnxruntime(model, x, target, decode, timing)
    else:
        times = _time_torch(model, x, target, decode, timing)
    return LatencyResult.from_times(times, target)


def _time_onnxruntime(model, x, target: Target, decode: bool, timing: dict) -> list[float]:
    onnx_bytes = export_onnx(model, None, decode=decode, input_shape=x.shape)
    providers = ["CUDAExecutionProvider"] if target.device == "cuda" else ["CPUExecutionProvider"]
    session = ort_session(onnx_bytes, target.threads, providers)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return time_calls(lambda: session.run(None, feed), **timing)


def _time_torch(model, x, target: Target, decode: bool, timing: dict) -> list[float]:
    graph = DeployGraph(deploy_copy(model), decode).to(target.device)
    x = x.to(target.device)
    sync = torch.cuda.synchronize if target.device == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    torch.set_num_threads(target.threads)
    try:
        with torch.inference_mode():
            return time_calls(lambda: graph(x), sync=sync, **timing)
    finally:
        torch.set_num_threads(previous)
