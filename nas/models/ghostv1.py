"""GhostNet V1: the Ghost module (Han et al., 2020).

Half (1/ratio) of the output channels come from an ordinary conv ("primary"); the rest are
"ghosts" made from those by a cheap depthwise conv. Output = concat(primary, cheap)[:c_out].
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def conv_bn_act(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class GhostModule(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 1, ratio: int = 2, dw: int = 3, stride: int = 1,
                 act: bool = True):
        super().__init__()
        if ratio < 2:
            raise ValueError(f"Ghost ratio must be >= 2, got {ratio}")
        self.c_out = c_out
        init = math.ceil(c_out / ratio)
        new = init * (ratio - 1)
        self.primary = self.make_primary(c_in, init, k, stride, act)
        # groups=init: each primary channel spawns (ratio - 1) ghosts.
        self.cheap = self.make_cheap(init, new, dw, act)

    def make_primary(self, c_in: int, c_out: int, k: int, stride: int, act: bool) -> nn.Module:
        return conv_bn_act(c_in, c_out, k, stride, act=act)

    def make_cheap(self, c_in: int, c_out: int, dw: int, act: bool) -> nn.Module:
        return conv_bn_act(c_in, c_out, dw, 1, groups=c_in, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat((y, self.cheap(y)), 1)[:, : self.c_out]
