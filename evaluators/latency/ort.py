"""onnxruntime sessions set up for timing. Only numpy and onnxruntime: the device server uses it."""
from __future__ import annotations

import os

from .timing import Opener


def ort_session(onnx_model: bytes | str | os.PathLike, threads: int | None = None, providers=None):
    """An onnxruntime session set up for latency: all graph optimisations, sequential execution,
    `threads` intra-op threads (None: onnxruntime's default) and one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3  # errors only
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    return ort.InferenceSession(source, opts, providers=providers or ["CPUExecutionProvider"])


def session_opener(onnx_bytes: bytes, feeds: dict, threads: int | None, providers=None) -> Opener:
    """An opener (see timing.py) of `onnx_bytes`: each call opens a fresh session and returns a
    callable that runs it once on `feeds` ({input name: numpy array})."""
    def open_session():
        session = ort_session(onnx_bytes, threads, providers)
        return lambda: session.run(None, feeds)
    return open_session
