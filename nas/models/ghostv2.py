"""GhostNet V2: DFC (decoupled fully connected) attention (Tang et al., 2022).

A cheap long-range gate computed from the module input at half resolution: 1x1 conv, then a
horizontal (1 x K) and a vertical (K x 1) depthwise conv, each with BN and no nonlinearity
in between; sigmoid, nearest-upsampled to the Ghost output, multiplied in.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DFCAttention(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 1, stride: int = 1, kernel: int = 5):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"DFC kernel must be odd and positive, got {kernel}")
        self.gate = nn.Sequential(
            nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out),
            nn.Conv2d(c_out, c_out, (1, kernel), 1, (0, kernel // 2), groups=c_out, bias=False),
            nn.BatchNorm2d(c_out),
            nn.Conv2d(c_out, c_out, (kernel, 1), 1, (kernel // 2, 0), groups=c_out, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        a = self.gate(F.avg_pool2d(x, 2, 2))
        # Resize to the exact output size (not a fixed x2) so odd input sizes work.
        return F.interpolate(a.sigmoid(), size=size, mode="nearest")


class GhostModuleV2(nn.Module):
    """A Ghost module (V1 or re-parameterizable V3) whose output is gated by DFC attention."""

    def __init__(self, ghost: nn.Module, c_in: int, c_out: int, k: int = 1, stride: int = 1, kernel: int = 5):
        super().__init__()
        self.ghost = ghost
        self.attn = DFCAttention(c_in, c_out, k, stride, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost(x)
        return y * self.attn(x, y.shape[-2:])
