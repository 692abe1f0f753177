"""The deploy graph: re-parameterized, eval mode, exported to ONNX and checked against PyTorch.

Exporter choice (torch 2.13): the TorchScript exporter (`dynamo=False`), then onnxscript's graph
optimizer. The default dynamo exporter cannot trace `Detect.decode` (it reads the stride buffer
with `.tolist()`, a data-dependent guard under torch.export), takes several seconds where the
TorchScript one takes a fraction of one, and prints its progress. The TorchScript graph keeps
shape arithmetic (Shape/Gather/Slice around every Resize and Ghost channel slice) that
onnxruntime does not fully fold: 17 ms against 14.5 ms for the GhostNetV2 trunk at 320 px on one
thread. onnxscript's optimizer folds it away (the same pass the dynamo exporter runs), giving the
dynamo exporter's graph and speed. The TorchScript exporter's deprecation and tracer warnings are
silenced because they say nothing about the model.
"""
from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .latency.ort import ort_session

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(11, 21)  # the TorchScript exporter stops at 20; below 11 resize/softmax differ
PARITY_ATOL = 1e-4


class OnnxParityError(RuntimeError):
    """onnxruntime and PyTorch disagree on the same input: the exported graph is wrong."""


def deploy_copy(model: nn.Module) -> nn.Module:
    """A float32, eval-mode, re-parameterized deep copy of `model` on the CPU; the original is untouched."""
    from nas.models import reparameterize

    deployed = copy.deepcopy(model).float().cpu().eval()
    reparameterize(deployed)  # no-op when there is nothing to fuse
    return deployed


class DeployGraph(nn.Module):
    """What ships: the detector followed by its decode -> (boxes [1, A, 4], scores [1, A, nc]).

    With `decode=False` (or for a module without `decode`, such as a single block) the raw outputs
    are returned unchanged, as a tuple.
    """

    def __init__(self, model: nn.Module, decode: bool = True):
        super().__init__()
        self.model = model
        self.decode = decode and hasattr(model, "decode")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        if self.decode:
            return tuple(self.model.decode(out))
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)


def _input_shape(model: nn.Module, imgsz: int | None, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(input_shape)
    imgsz = imgsz or getattr(model, "imgsz", None)
    if not imgsz:
        raise ValueError("give imgsz (the model has no imgsz attribute)")
    return (1, 3, int(imgsz), int(imgsz))


def export_onnx(model: nn.Module, path: str | os.PathLike | None = None, imgsz: int | None = None,
                opset: int = DEFAULT_OPSET, decode: bool = True, input_shape=None) -> bytes | Path:
    """Export the deploy graph of `model` (re-parameterized copy, batch 1, static shape).

    Returns the ONNX bytes when `path` is None, else writes the file and returns its Path.
    `imgsz` defaults to `model.imgsz`; `input_shape` overrides it for modules that do not take images.
    The input is named `images`; the outputs `boxes`, `scores` (decode) or `output0..`.
    """
    graph = DeployGraph(deploy_copy(model), decode)
    x = torch.rand(_input_shape(model, imgsz, input_shape))
    data = export_graph(graph, (x,), ["images"], ["boxes", "scores"] if graph.decode else None, opset)
    if path is None:
        return data
    path = Path(path)
    path.write_bytes(data)
    return path


def export_graph(graph: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
                 output_names: list[str] | None = None, opset: int = DEFAULT_OPSET) -> bytes:
    """ONNX bytes of an eval-mode `graph` at the static shapes of `inputs`: the one export path of
    whole models (`export_onnx`) and of the latency table's single blocks, so that the table times
    what ships. Outputs are named `output0..` unless `output_names` says otherwise."""
    if output_names is None:  # as many as the module returns
        with torch.inference_mode():
            out = graph(*inputs)
        output_names = [f"output{i}" for i in range(len(out) if isinstance(out, (list, tuple)) else 1)]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based exporter"
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # stride .tolist() is a constant: intended
        warnings.simplefilter("ignore", UserWarning)  # tracer notes on list inputs of multi-input blocks
        torch.onnx.export(graph, tuple(inputs), buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=input_names, output_names=output_names)
    return _optimize(buffer.getvalue())


def _optimize(onnx_bytes: bytes) -> bytes:
    """Constant-fold the static shape arithmetic and drop no-op nodes (onnxscript's optimizer)."""
    import onnx
    import onnxscript.optimizer

    return onnxscript.optimizer.optimize(onnx.load_from_string(onnx_bytes)).SerializeToString()


def check_onnx(model: nn.Module, onnx_model: bytes | str | os.PathLike, imgsz: int | None = None,
               decode: bool = True, atol: float = PARITY_ATOL, seed: int = 0, input_shape=None) -> float:
    """Run the exported graph in onnxruntime and the original (un-fused, eval) model in PyTorch on
    the same random input; return the largest absolute difference, raise OnnxParityError above `atol`.

    Comparing with the un-fused model checks re-parameterization and export together. Boxes are
    compared in units of the input size (a fraction of the image): in pixels, float32 rounding alone
    exceeds 1e-4 on a 640 px image, which would hide nothing and fail for no reason.
    """
    shape = _input_shape(model, imgsz, input_shape)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    reference = DeployGraph(copy.deepcopy(model).float().cpu().eval(), decode)
    with torch.inference_mode():
        expected = [t.numpy() for t in reference(x)]
    session = ort_session(onnx_model)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if len(got) != len(expected):
        raise OnnxParityError(f"onnxruntime returned {len(got)} outputs, PyTorch {len(expected)}")
    if reference.decode:  # boxes first: compare them as a fraction of the image size
        size = float(max(shape[-2:]))
        got[0], expected[0] = got[0] / size, expected[0] / size
    diff = 0.0
    for a, b in zip(got, expected):
        if a.shape != b.shape:
            raise OnnxParityError(f"output shape {list(a.shape)} from onnxruntime, {list(b.shape)} from PyTorch")
        diff = max(diff, float(np.max(np.abs(a - b))) if a.size else 0.0)
    if not diff <= atol:  # also catches NaN
        raise OnnxParityError(f"onnxruntime differs from PyTorch by {diff:.3g} (> {atol:g})")
    return diff
