"""Where a latency is measured: the device, backend, threads and input size, and the machine and
library versions behind them. Every figure carries its `Target`; `Target.key()` names the tables.

No torch at import: the device server (evaluators.latency.server) shares this package.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
from dataclasses import asdict, dataclass

from nas.errors import UserError

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


def onnxruntime_version() -> str:
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
        import torch

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
                   onnxruntime_version() if backend == "onnxruntime" else "", processor, socket.gethostname())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        """The Target a `to_dict()` describes (unknown keys ignored, as from a newer file)."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})

    def identity(self) -> dict:
        """What makes two targets time alike: device, backend, threads, input size, processor and the
        runtime's version (torch's only for the torch backend). Not the host: identical machines
        share one table, so a device profiled once serves everyone (the hostname stays in the table
        file as information)."""
        return {"device": self.device, "backend": self.backend, "threads": self.threads, "imgsz": self.imgsz,
                "processor": self.processor,
                "torch_version": self.torch_version if self.backend == "torch" else "",
                "onnxruntime_version": self.onnxruntime_version}

    def describe(self) -> str:
        """One line naming the identity, e.g. `cpu-onnxruntime-2t-320-1a2b3c4d (Intel Xeon, onnxruntime 1.22.0)`."""
        version = f"torch {self.torch_version}" if self.backend == "torch" else f"onnxruntime {self.onnxruntime_version}"
        return f"{self.key()} ({self.processor or 'unknown processor'}, {version})"

    def key(self) -> str:
        """Short, stable, file-name-safe id, e.g. `cpu-onnxruntime-2t-320-1a2b3c4d`: the readable part
        says what was measured, the digest on what (processor and runtime version, not the host)."""
        i = self.identity()
        where = "|".join((i["processor"], i["torch_version"], i["onnxruntime_version"]))
        digest = hashlib.sha1(where.encode()).hexdigest()[:8]
        return f"{self.device}-{self.backend}-{self.threads}t-{self.imgsz}-{digest}"
