"""The Ghost bottleneck in its V1 / V2 / V3 forms, chosen by options rather than by class:

- V1: `dfc=0, branches=0`
- V2: `dfc=K` puts DFC attention (kernel K) on the first (expansion) Ghost module
- V3: `branches=n` trains every primary / cheap / stride-2 depthwise conv as n re-param branches
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import SqueezeExcite
from .ghostv1 import GhostModule, conv_bn_act
from .ghostv2 import GhostModuleV2
from .ghostv3 import GhostModuleV3, RepConv


def ghost_module(c_in: int, c_out: int, *, k: int = 1, stride: int = 1, act: bool = True, ratio: int = 2,
                 dfc: int = 0, branches: int = 0, scale: bool = True) -> nn.Module:
    """The Ghost module these options describe (branches 0 = plain; dfc 0 = no attention)."""
    if branches > 0:
        ghost = GhostModuleV3(c_in, c_out, k, ratio, 3, stride, act, branches=branches, scale=scale)
    else:
        ghost = GhostModule(c_in, c_out, k, ratio, 3, stride, act)
    return GhostModuleV2(ghost, c_in, c_out, k, stride, dfc) if dfc else ghost


class GhostBottleneck(nn.Module):
    """ghost1 (expand to `mid`, ReLU) -> [stride-2 depthwise] -> [SE] -> ghost2 (project, no act) + shortcut."""

    def __init__(self, c_in: int, mid: int, c_out: int, k: int = 3, stride: int = 1, se: float = 0.0,
                 ratio: int = 2, dfc: int = 0, branches: int = 0, scale: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.ghost1 = ghost_module(c_in, mid, act=True, ratio=ratio, dfc=dfc, branches=branches, scale=scale)
        if stride == 1:
            self.dw = nn.Identity()
        elif branches > 0:
            self.dw = RepConv(mid, mid, k, 2, groups=mid, branches=branches, scale=scale, identity=False, act=False)
        else:
            self.dw = conv_bn_act(mid, mid, k, 2, groups=mid, act=False)
        self.se = SqueezeExcite(mid, se) if se > 0 else nn.Identity()
        # The projection never gets attention (as in the reference network).
        self.ghost2 = ghost_module(mid, c_out, act=False, ratio=ratio, branches=branches, scale=scale)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(conv_bn_act(c_in, c_in, k, stride, groups=c_in, act=False),
                                          conv_bn_act(c_in, c_out, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.se(self.dw(self.ghost1(x)))) + self.shortcut(x)
