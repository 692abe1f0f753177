"""Blocks: the units the latency table times. A block is a row of the architecture; a row of n
chained copies (a stage of depth n) is its first copy plus n - 1 times its repeat copy, so stages
of every depth share the same few entries. Re-parameterization branches fuse away in the deploy
graph, so blocks that differ only in their branch count share an entry too.

    arch_blocks(arch, imgsz)   # [(block key, how many times it runs), ...]
    block_onnx(key)            # its deploy graph as ONNX, exported as whole models are, and its inputs
"""
from __future__ import annotations

import functools
import json

import torch
import torch.nn as nn

from nas.models.graph import plan
from nas.models.registry import REGISTRY

from ..onnx_export import deploy_copy, export_graph

# Args with no effect on the deploy graph: branches and their scale branch fuse into one conv.
_DEPLOY_NEUTRAL = {"branches": 0, "scale": True}


def block_key(name: str, args: dict, c_ins: list[int], sizes: list[int], repeats: int) -> str:
    """The table key of one block: what it is and the square input size(s) it sees."""
    args = {k: _DEPLOY_NEUTRAL.get(k, v) for k, v in args.items()}
    return json.dumps([name, args, c_ins, sizes, repeats], separators=(",", ":"))


# A fixed small block (3x3 conv 32 -> 32 at 40x40, about 0.1-0.3 ms): the quiet-machine canary.
CANARY_KEY = block_key("ConvBNAct", {"c_out": 32, "k": 3, "stride": 1}, [32], [40], 1)


def arch_blocks(arch: dict, imgsz: int) -> list[tuple[str, int]]:
    """(block key, how many times it runs) for every row of `arch` at input size `imgsz`."""
    layers = plan(arch)
    padded = imgsz + (-imgsz % 32)  # the Detector pads its input to a multiple of 32
    blocks = []
    for layer in layers:
        sizes = tuple(padded if s == -1 else int(padded // layers[s].stride) for s in layer.sources)
        blocks += _row_blocks(layer.name, tuple(layer.args.items()), tuple(layer.c_ins), sizes, layer.repeats,
                              layer.c_out, int(padded // layer.stride))
    return blocks


@functools.lru_cache(maxsize=1 << 16)
def _row_blocks(name, args, c_ins, sizes, repeats, c_out, out_size) -> tuple[tuple[str, int], ...]:
    """The blocks of one planned row; cached because writing keys costs more than planning."""
    args = dict(args)
    if REGISTRY[name].repeats == "chain" and repeats > 1:
        rest = dict(args, stride=1) if "stride" in args else args
        return ((block_key(name, args, list(c_ins), list(sizes), 1), 1),
                (block_key(name, rest, [c_out], [out_size], 1), repeats - 1))
    return ((block_key(name, args, list(c_ins), list(sizes), repeats), 1),)


class _Block(nn.Module):
    """One block with plain tensor inputs, for export and timing: multi-input rows take a list;
    the detection head is timed with its decode, as whole detectors are."""

    def __init__(self, module: nn.Module, multi_input: bool):
        super().__init__()
        self.module, self.multi_input = module, multi_input

    def forward(self, *xs: torch.Tensor):
        out = self.module(list(xs) if self.multi_input else xs[0])
        if hasattr(self.module, "decode"):
            out = self.module.decode(out)
        return tuple(out) if isinstance(out, (list, tuple)) else out


def build_block(key: str) -> tuple[nn.Module, list[torch.Tensor]]:
    """The deploy-graph module of a block key and random inputs of its shapes."""
    name, args, c_ins, sizes, repeats = json.loads(key)
    spec = REGISTRY[name]
    module = _Block(deploy_copy(spec.build(c_ins, repeats, args)), spec.multi_input)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.rand((1, c, s, s), generator=g) for c, s in zip(c_ins, sizes)]
    return module.eval(), inputs


def block_onnx(key: str) -> tuple[bytes, dict]:
    """The block's deploy graph as ONNX bytes (the whole models' exporter) and its feeds
    ({input name: numpy array})."""
    module, inputs = build_block(key)
    names = [f"x{i}" for i in range(len(inputs))]
    return export_graph(module, tuple(inputs), names), {n: x.numpy() for n, x in zip(names, inputs)}
