"""The explicit registry of modules an architecture YAML may name.

Each entry says which args a row takes (name, type, default), how to build the module from the
input channels, how many channels come out and how the row changes the feature stride. Nothing
outside this table can be built: no eval, no globals() lookups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from .bottleneck import GhostBottleneck, ghost_module
from .common import ConvBNAct
from .head import Detect
from .neck import Concat, GhostCSP

REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    name: str
    kind: type | tuple  # int, float, bool, str or a tuple of those (None allowed via NoneType)
    default: Any = REQUIRED
    check: Callable[[Any], bool] | None = None
    rule: str = ""  # what `check` demands, for the error message


@dataclass(frozen=True)
class Spec:
    args: tuple[Arg, ...]
    # build(c_ins, n, a) -> module, where a is the args as a dict and n the row's repeats
    build: Callable[[list[int], int, dict], nn.Module]
    out_channels: Callable[[list[int], dict], int]
    stride: Callable[[dict], float] = lambda a: 1.0
    multi_input: bool = False
    repeats: str = "chain"  # "chain": n copies in sequence; "inner": the module takes n; "one": n must be 1
    match_input: str | None = None  # an arg that must equal the input channel count
    doc: str = ""


def _positive(v) -> bool:
    return v > 0


def _odd(v) -> bool:
    return v > 0 and v % 2 == 1


def _chain(make: Callable[[int, bool, dict], nn.Module]):
    """n copies in sequence: the first maps c_in -> c_out with the row's stride, the rest keep shape."""
    def build(c_ins, n, a):
        first = make(c_ins[0], True, a)
        if n == 1:
            return first
        rest = [make(a["c_out"], False, a) for _ in range(n - 1)]
        return nn.Sequential(first, *rest)
    return build


_ODD = dict(check=_odd, rule="an odd positive int")
_POS = dict(check=_positive, rule="a positive int")
_STRIDE = dict(check=lambda v: v in (1, 2), rule="1 or 2")
_RATIO = dict(check=lambda v: 2 <= v <= 8, rule="between 2 and 8")
_DFC = dict(check=lambda v: v == 0 or _odd(v), rule="0 (off) or an odd kernel size")
_BRANCHES = dict(check=lambda v: 0 <= v <= 8, rule="between 0 and 8")
_SE = dict(check=lambda v: 0 <= v < 1, rule="in [0, 1)")
NoneType = type(None)


REGISTRY: dict[str, Spec] = {
    "ConvBNAct": Spec(
        args=(Arg("c_out", int, **_POS), Arg("k", int, 1, **_ODD), Arg("stride", int, 1, **_STRIDE)),
        build=_chain(lambda c, first, a: ConvBNAct(c, a["c_out"], a["k"], a["stride"] if first else 1)),
        out_channels=lambda c, a: a["c_out"],
        stride=lambda a: a["stride"],
        doc="k x k conv + BN + ReLU",
    ),
    "GhostConv": Spec(
        args=(Arg("c_out", int, **_POS), Arg("k", int, 1, **_ODD), Arg("stride", int, 1, **_STRIDE),
              Arg("ratio", int, 2, **_RATIO), Arg("dfc", int, 0, **_DFC), Arg("branches", int, 0, **_BRANCHES)),
        build=_chain(lambda c, first, a: ghost_module(
            c, a["c_out"], k=a["k"], stride=a["stride"] if first else 1, ratio=a["ratio"], dfc=a["dfc"],
            branches=a["branches"])),
        out_channels=lambda c, a: a["c_out"],
        stride=lambda a: a["stride"],
        doc="a Ghost module with ReLU (V1; V2 with dfc; V3 with branches)",
    ),
    "GhostBottleneck": Spec(
        args=(Arg("c_out", int, **_POS), Arg("mid", int, **_POS), Arg("k", int, 3, **_ODD),
              Arg("stride", int, 1, **_STRIDE), Arg("se", (float, int), 0.0, **_SE), Arg("ratio", int, 2, **_RATIO),
              Arg("dfc", int, 0, **_DFC), Arg("branches", int, 0, **_BRANCHES), Arg("scale", bool, True)),
        build=_chain(lambda c, first, a: GhostBottleneck(
            c, a["mid"], a["c_out"], a["k"], a["stride"] if first else 1, float(a["se"]), a["ratio"], a["dfc"],
            a["branches"], a["scale"])),
        out_channels=lambda c, a: a["c_out"],
        stride=lambda a: a["stride"],
        doc="Ghost bottleneck: [c_out, mid, k, stride, se, ratio, dfc, branches, scale]",
    ),
    "GhostCSP": Spec(
        args=(Arg("c_out", int, **_POS), Arg("ratio", int, 2, **_RATIO), Arg("dfc", int, 0, **_DFC),
              Arg("branches", int, 0, **_BRANCHES)),
        build=lambda c, n, a: GhostCSP(c[0], a["c_out"], n, a["ratio"], a["dfc"], a["branches"]),
        out_channels=lambda c, a: a["c_out"],
        repeats="inner",
        doc="CSP block of n Ghost bottlenecks (repeats = n)",
    ),
    "Concat": Spec(
        args=(Arg("dim", int, 1, check=lambda v: v == 1, rule="1 (channels)"),),
        build=lambda c, n, a: Concat(a["dim"]),
        out_channels=lambda c, a: sum(c),
        multi_input=True,
        repeats="one",
    ),
    "Detect": Spec(
        args=(Arg("nc", int, **_POS), Arg("width", int, **_POS)),
        build=lambda c, n, a: Detect(c, a["nc"], a["width"]),
        out_channels=lambda c, a: 4 * 16 + a["nc"],
        multi_input=True,
        repeats="one",
        doc="decoupled DFL head on P3/P4/P5: [nc, width]",
    ),
    "nn.Upsample": Spec(
        args=(Arg("size", NoneType, None), Arg("scale_factor", int, 2, **_POS),
              Arg("mode", str, "nearest", check=lambda v: v == "nearest", rule="'nearest'")),
        build=lambda c, n, a: nn.Upsample(scale_factor=a["scale_factor"], mode=a["mode"]),
        out_channels=lambda c, a: c[0],
        stride=lambda a: 1.0 / a["scale_factor"],
        repeats="one",
    ),
    "nn.MaxPool2d": Spec(
        args=(Arg("kernel_size", int, **_POS), Arg("stride", int, 1, **_STRIDE), Arg("padding", int, 0)),
        build=lambda c, n, a: nn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"]),
        out_channels=lambda c, a: c[0],
        stride=lambda a: a["stride"],
        repeats="one",
    ),
    "nn.BatchNorm2d": Spec(
        args=(Arg("num_features", int, **_POS),),
        build=lambda c, n, a: nn.BatchNorm2d(a["num_features"]),
        out_channels=lambda c, a: a["num_features"],
        repeats="one",
        match_input="num_features",
    ),
    "nn.Identity": Spec(
        args=(),
        build=lambda c, n, a: nn.Identity(),
        out_channels=lambda c, a: c[0],
        repeats="one",
    ),
}
