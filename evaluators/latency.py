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

import functools
import hashlib
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from nas.errors import UserError

from .onnx_export import DeployGraph, deploy_copy, export_onnx, ort_session

DEVICES = ("cpu", "cuda")
BACKENDS = ("torch", "onnxruntime")


@functools.lru_cache(maxsize=None)
def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share a core and only add noise)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores, block = set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f.read().splitlines() + [""]:
                if not line.strip():  # end of one processor block
                    if "core id" in block:
                        cores.add((block.get("physical id"), block["core id"]))
                    block = {}
                elif ":" in line:
                    key, value = line.split(":", 1)
                    block[key.strip()] = value.strip()
    except OSError:
        pass
    return max(1, min(len(cores) or available, available))


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return ""
    return onnxruntime.__version__


@dataclass(frozen=True)
class Target:
    """Where a latency was measured. Build one with `Target.resolve(...)`, which fills the defaults
    and records the versions and hardware."""

    device: str = "cpu"
    backend: str = "onnxruntime"
    threads: int = 1
    imgsz: int = 320
    torch_version: str = ""
    onnxruntime_version: str = ""  # empty unless the backend is onnxruntime
    processor: str = ""  # CPU model; on CUDA the GPU name
    hostname: str = ""

    @classmethod
    def resolve(cls, device: str = "cpu", backend: str | None = None, threads: int | None = None,
                imgsz: int = 320) -> Target:
        """Validate the choices (UserError when impossible here) and record the environment.

        backend None: onnxruntime on CPU, torch on CUDA; threads None: all physical cores.
        """
        if device not in DEVICES:
            raise UserError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
        backend = backend or ("onnxruntime" if device == "cpu" else "torch")
        if backend not in BACKENDS:
            raise UserError(f"unknown latency backend {backend!r}: use one of {', '.join(BACKENDS)}")
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("device cuda asked for, but PyTorch sees no CUDA device here")
        if device == "cuda" and backend == "onnxruntime":
            import onnxruntime as ort
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("onnxruntime here has no CUDA support: use the torch backend on cuda")
        threads = physical_cores() if threads is None else int(threads)
        if threads < 1:
            raise UserError(f"threads must be at least 1, got {threads}")
        if int(imgsz) < 1:
            raise UserError(f"image size must be positive, got {imgsz}")
        processor = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
        return cls(device, backend, threads, int(imgsz), torch.__version__.split("+")[0],
                   _onnxruntime_version() if backend == "onnxruntime" else "", processor, socket.gethostname())

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """Short, stable, file-name-safe id, e.g. `cpu-onnxruntime-2t-320-1a2b3c4d`: the readable part
        says what was measured, the digest where (machine and library versions)."""
        where = "|".join((self.processor, self.hostname, self.torch_version, self.onnxruntime_version))
        digest = hashlib.sha1(where.encode()).hexdigest()[:8]
        return f"{self.device}-{self.backend}-{self.threads}t-{self.imgsz}-{digest}"


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


def time_calls(fn: Callable[[], object], warmup: int = 10, runs: int = 50, min_time_s: float = 1.0,
               max_runs: int = 2000, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Call `fn` `warmup` times, then time it (ms per call) until at least `runs` calls and
    `min_time_s` seconds, but no more than `max_runs` calls. `sync` runs around each timed call
    (torch.cuda.synchronize on CUDA, where calls return before the work is done)."""
    for _ in range(warmup):
        fn()
    sync()
    times, start = [], time.perf_counter()
    while len(times) < max(1, runs) or (time.perf_counter() - start < min_time_s and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


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
