"""From architecture rows to a runnable graph (Ultralytics-style: each row reads earlier rows' outputs).

`plan()` walks the rows once, resolving `from` indices, args, channels and strides without
building anything, so every error names its row before a single weight is allocated.
`LayerGraph` builds and runs the plan; `Detector` is a LayerGraph that ends in a `Detect` row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.errors import UserError

from .arch import load_arch, resolve_args, rows
from .head import STRIDES, Detect
from .registry import REGISTRY


@dataclass
class Layer:
    i: int              # global row index
    where: str          # "head row 3 (GhostCSP)" for messages
    sources: list[int]  # absolute indices of the rows it reads (-1 = the image)
    repeats: int
    name: str
    args: dict
    c_ins: list[int]
    c_out: int
    stride: float       # feature stride of the output relative to the input image


def plan(arch: dict, where: str = "architecture") -> list[Layer]:
    layers: list[Layer] = []
    for i, (section, j, row) in enumerate(rows(arch)):
        at = f"{where}: {section} row {j}"
        if not isinstance(row, list) or len(row) != 4:
            raise UserError(f"{at}: a row must be [from, repeats, module, args], got {row!r}")
        src, n, name, args = row
        if not isinstance(name, str) or name not in REGISTRY:
            raise UserError(f"{at}: unknown module {name!r}; known: {', '.join(sorted(REGISTRY))}")
        spec, at = REGISTRY[name], f"{at} ({name})"
        if not isinstance(args, list):
            raise UserError(f"{at}: args must be a list, got {args!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UserError(f"{at}: repeats must be a positive int, got {n!r}")
        if spec.repeats == "one" and n != 1:
            raise UserError(f"{at}: repeats must be 1 for {name}, got {n}")

        # `from`: -1 is the previous row; negative is relative; the first row reads the image.
        many = isinstance(src, list)
        if many != spec.multi_input or (many and not src):
            kind = "a list of row indices" if spec.multi_input else "a single row index"
            raise UserError(f"{at}: 'from' must be {kind}, got {src!r}")
        sources = []
        for s in (src if many else [src]):
            if not isinstance(s, int) or isinstance(s, bool):
                raise UserError(f"{at}: 'from' entries must be ints, got {s!r}")
            a = i + s if s < 0 else s
            if i == 0 and s == -1:
                a = -1
            elif not 0 <= a < i:
                raise UserError(f"{at}: 'from' {s} does not name an earlier row (this is row {i})")
            sources.append(a)

        c_ins = [3 if s == -1 else layers[s].c_out for s in sources]
        strides = [1.0 if s == -1 else layers[s].stride for s in sources]
        a = resolve_args(spec, args, arch.get("nc"), at)
        if spec.match_input and a[spec.match_input] != c_ins[0]:
            raise UserError(f"{at}: channel mismatch: '{spec.match_input}' is {a[spec.match_input]} "
                            f"but the input has {c_ins[0]} channels")
        if name == "Concat" and len(set(strides)) > 1:
            raise UserError(f"{at}: cannot concat features of strides {[int(s) for s in strides]}; "
                            f"rows {sources} must have the same resolution")
        if name == "Detect":
            if len(sources) != 3 or tuple(strides) != STRIDES:
                raise UserError(f"{at}: Detect needs 3 inputs at strides {list(STRIDES)}, got rows {sources} "
                                f"at strides {[s for s in strides]}")
            if a["nc"] != arch["nc"]:
                raise UserError(f"{at}: Detect nc {a['nc']} differs from the top-level nc {arch['nc']}")
        stride = strides[0] * spec.stride(a)
        layers.append(Layer(i, at, sources, n, name, a, c_ins, spec.out_channels(c_ins, a), stride))
    return layers


class LayerGraph(nn.Module):
    """Runs planned layers in order, keeping only the outputs later rows read."""

    def __init__(self, layers: list[Layer], outputs: list[int] | None = None):
        super().__init__()
        self.plan = layers
        self.layers = nn.ModuleList()
        for layer in layers:
            module = REGISTRY[layer.name].build(layer.c_ins, layer.repeats, layer.args)
            module.i, module.f, module.type, module.args = layer.i, layer.sources, layer.name, layer.args
            module.multi_input = REGISTRY[layer.name].multi_input  # looked up once, not per forward
            self.layers.append(module)
        self.outputs = outputs or [layers[-1].i]
        self.keep = {s for layer in layers for s in layer.sources} | set(self.outputs)

    def forward(self, x: torch.Tensor):
        saved: dict[int, torch.Tensor] = {-1: x}
        for m in self.layers:
            inputs = [saved[s] for s in m.f]
            x = m(inputs if m.multi_input else inputs[0])
            if m.i in self.keep:
                saved[m.i] = x
        outs = [saved[i] for i in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


class Detector(LayerGraph):
    """A LayerGraph ending in `Detect`: returns raw level maps; `decode` gives boxes and scores."""

    def __init__(self, arch: dict):
        super().__init__(plan(arch))  # the arch is validated already (load_arch)
        self.arch = arch
        self.nc, self.imgsz = arch["nc"], arch["imgsz"]
        head: Detect = self.layers[-1]
        self.reg_max = head.reg_max

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Pad bottom/right to a multiple of 32 so the FPN levels line up for any input size;
        # pixel coordinates are unchanged because the origin stays top-left.
        h, w = x.shape[-2:]
        ph, pw = -h % 32, -w % 32
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return super().forward(x)

    @property
    def head(self) -> Detect:
        return self.layers[-1]

    @property
    def stride(self) -> torch.Tensor:
        return self.head.stride

    def decode(self, raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.decode(raw)


def build_model(source) -> Detector:
    """A Detector from an architecture YAML path or dict. The same dict always builds the same
    model; weights are random (seed torch yourself for identical initial weights)."""
    return Detector(load_arch(source))
