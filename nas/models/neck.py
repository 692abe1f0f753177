"""Neck blocks for the PAN-FPN: a CSP block of Ghost bottlenecks, and channel concat."""
from __future__ import annotations

import torch
import torch.nn as nn

from .bottleneck import GhostBottleneck
from .common import ConvBNAct


class GhostCSP(nn.Module):
    """CSP block (as in YOLOv5's C3Ghost): half the channels go through `n` Ghost bottlenecks,
    half skip them; a 1x1 conv merges both. Cheap, and keeps a gradient shortcut."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, ratio: int = 2, dfc: int = 0, branches: int = 0):
        super().__init__()
        hidden = max(4, c_out // 2)
        self.cv1 = ConvBNAct(c_in, hidden, 1)
        self.cv2 = ConvBNAct(c_in, hidden, 1)
        self.m = nn.Sequential(*(GhostBottleneck(hidden, hidden, hidden, 3, 1, 0.0, ratio, dfc, branches)
                                 for _ in range(n)))
        self.cv3 = ConvBNAct(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class Concat(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.dim)
