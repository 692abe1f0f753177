"""Latency on a named target: measured whole (measure.py) or predicted from a table of blocks
(predictor.py), timed with one discipline (timing.py) through a backend (local.py: this machine).

    target.py       where a figure was measured (Target) and its key
    timing.py       warm-up, bursts, fastest, quiet-machine canary (numpy only)
    ort.py          onnxruntime sessions for timing (numpy and onnxruntime only)
    measure.py      whole models: measure_latency -> LatencyResult
    blocks.py       block keys of an architecture, and each block's deploy graph as ONNX
    local.py        the local backend (this machine)
    remote.py       the remote backend: a device running server.py (Device, RemoteBackend)
    server.py       the device server, `nas device serve` (standard library, numpy, onnxruntime)
    calibration.py  a * block_sum + b, fitted on whole models
    predictor.py    the table on disk and the prediction

Names are loaded on first use: importing this package pulls in neither torch nor the models, so
that modules without them (timing, ort) can serve a device of their own.
"""
import importlib

_EXPORTS = {
    "Target": "target", "physical_cores": "target", "cpu_name": "target",
    "time_calls": "timing", "Canary": "timing",
    "LatencyResult": "measure", "measure_latency": "measure",
    "arch_blocks": "blocks", "block_key": "blocks",
    "Calibration": "calibration", "fit_calibration": "calibration",
    "LatencyPredictor": "predictor", "LocalBackend": "local",
    "RemoteBackend": "remote", "Device": "remote",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
