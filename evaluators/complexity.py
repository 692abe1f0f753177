"""Parameters and multiply-accumulates, counted with thop on a deep copy.

thop registers `total_ops` / `total_params` buffers and forward hooks on the model it profiles and
does not remove all of them, so it only ever sees a throw-away copy here.

Conventions:
- `macs`: multiply-accumulates of one image (batch 1) in convolutions and linear layers, conv bias
  not counted. That is what the GhostNet papers (and SPEC's reference table, which these counts
  match exactly) call "MACs". thop's extra counts for BatchNorm (folded into the preceding conv in
  any deployed graph), pooling and upsampling are switched off so the figure has one meaning.
- `flops` = 2 * `macs` (one multiply and one add), the figure most YOLO tools print as "FLOPs".
- `params`: counted directly from `model.parameters()`, not from thop (which misses parameters that
  live outside its known layer types).
Elementwise work (activations, attention gates, additions) is not counted.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn


# Layers thop would count that do no multiply-accumulates in the deployed graph.
_NOT_MACS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.Upsample, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _profile(model: nn.Module, imgsz: int, deploy: bool, with_shapes: bool = False, in_place: bool = False):
    """thop on a copy (or on `model` itself) -> (the profiled module, total MACs, thop's per-child
    tree, {layer name: output shape})."""
    with warnings.catch_warnings():  # thop 0.1.1 imports distutils' LooseVersion
        warnings.simplefilter("ignore", DeprecationWarning)
        from thop import profile
        from thop.vision.basic_hooks import zero_ops

    if in_place:
        from nas.models import reparameterize
        probe = model.eval()
        if deploy:
            reparameterize(probe)
    elif deploy:
        from .onnx_export import deploy_copy
        probe = deploy_copy(model)
    else:
        probe = copy.deepcopy(model).eval()
    param = next(probe.parameters(), None)
    x = torch.zeros(1, 3, imgsz, imgsz, device=param.device if param is not None else "cpu")
    shapes: dict[str, object] = {}
    if with_shapes:
        for name, layer in _top_layers(probe):
            layer.register_forward_hook(lambda m, i, out, name=name: shapes.__setitem__(name, _shape_of(out)))
    free = {layer: zero_ops for layer in _NOT_MACS}
    macs, _, tree = profile(probe, inputs=(x,), custom_ops=free, verbose=False, ret_layer_info=True)
    return probe, int(macs), tree, shapes


def complexity(model: nn.Module, imgsz: int, deploy: bool = False, in_place: bool = False) -> dict:
    """{"params", "macs", "flops", "imgsz"} of `model` at batch 1, `imgsz` x `imgsz`.

    `deploy=True` counts the re-parameterized graph (what ships) instead of the training graph.
    `model` is left exactly as it was: no hooks, no buffers, same mode. `in_place=True` counts
    `model` itself instead of a copy, for a throw-away model: the deep copy costs as much as the
    count (0.1-0.3 s at 320 px), but the model is left in eval mode with thop's leftovers and, with
    `deploy`, re-parameterized (so count its training graph first).
    """
    probe, macs, _, _ = _profile(model, imgsz, deploy, in_place=in_place)
    params = sum(p.numel() for p in probe.parameters())
    return {"params": int(params), "macs": macs, "flops": 2 * macs, "imgsz": int(imgsz)}


def _top_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The rows of an architecture (`model.layers`) when it has them, else its direct children."""
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return [(f"layers.{k}", m) for k, m in enumerate(layers)]
    return list(model.named_children())


def _shape_of(out):
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (list, tuple)):
        return [_shape_of(o) for o in out]
    return None


def per_layer(model: nn.Module, imgsz: int, deploy: bool = False) -> list[dict]:
    """One row per top-level layer: {"name", "type", "from", "args", "params", "macs", "shape"}.

    For a model with `model.layers` (rows carrying `i`, `f`, `type`, `args`, as built from an
    architecture YAML) these come from the rows; otherwise `name` is the child's attribute name,
    `type` its class, and `from`/`args` are None. `shape` is the output shape (a list of shapes for
    layers returning several tensors; None for a layer the forward pass never called).
    """
    probe, _, tree, shapes = _profile(model, imgsz, deploy, with_shapes=True)
    rows = []
    for name, layer in _top_layers(probe):
        row_type = getattr(layer, "type", None)  # careful: nn.Module.type is also a method
        rows.append({
            "name": str(getattr(layer, "i", name)),
            "type": row_type if isinstance(row_type, str) else type(layer).__name__,
            "from": getattr(layer, "f", None),
            "args": getattr(layer, "args", None),
            "params": sum(p.numel() for p in layer.parameters()),
            "macs": _tree_macs(tree, name),
            "shape": shapes.get(name),
        })
    return rows


def _tree_macs(tree: dict, name: str) -> int:
    """MACs of the module at dotted `name` in thop's tree {child: (macs, params, {grandchild: ...})}."""
    node = (0, 0, tree)
    for part in name.split("."):
        node = node[2].get(part, (0, 0, {}))
    return int(node[0])
