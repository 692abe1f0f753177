"""GhostNet V3: training-time re-parameterization (Liu et al., 2024).

V3 keeps V2's architecture and trains every primary conv, cheap depthwise conv and stride-2
depthwise conv as a sum of parallel conv+BN branches (plus a 1x1 "scale" branch and, where
shapes allow, a BN-only identity branch). `RepConv.fuse()` folds them into one biased conv,
so the deployed graph costs exactly what V2 costs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ghostv1 import GhostModule, conv_bn_act


def fuse_conv_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """W' = t W, b' = beta - mean t with t = gamma / sqrt(var + eps)."""
    t = bn.weight / (bn.running_var + bn.eps).sqrt()
    return weight * t.view(-1, 1, 1, 1), bn.bias - bn.running_mean * t


class RepConv(nn.Module):
    """`branches` parallel k x k conv+BN, an optional 1x1 conv+BN scale branch (k > 1 only), an
    optional identity BN (c_in == c_out, stride 1); summed, then ReLU if `act`."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, branches: int = 3,
                 scale: bool = True, identity: bool = True, act: bool = True):
        super().__init__()
        if branches < 1:
            raise ValueError(f"RepConv needs at least one branch, got {branches}")
        self.c_in, self.c_out, self.k, self.stride, self.groups = c_in, c_out, k, stride, groups
        self.convs = nn.ModuleList(conv_bn_act(c_in, c_out, k, stride, groups, act=False) for _ in range(branches))
        self.scale = conv_bn_act(c_in, c_out, 1, stride, groups, act=False) if scale and k > 1 else None
        self.skip = nn.BatchNorm2d(c_out) if identity and c_in == c_out and stride == 1 else None
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        y = sum(branch(x) for branch in self.convs)
        if self.scale is not None:
            y = y + self.scale(x)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.act(y)

    @torch.no_grad()
    def fuse(self) -> None:
        """Collapse every branch into `self.fused` (exact in eval mode)."""
        if self.fused is not None:
            return
        weight, bias = 0.0, 0.0
        for branch in self.convs:
            w, b = fuse_conv_bn(branch[0].weight, branch[1])
            weight, bias = weight + w, bias + b
        if self.scale is not None:
            w, b = fuse_conv_bn(self.scale[0].weight, self.scale[1])
            pad = self.k // 2
            weight, bias = weight + F.pad(w, (pad, pad, pad, pad)), bias + b
        if self.skip is not None:
            # Identity as a conv: a centred one-hot kernel picking each channel's own input.
            per_group = self.c_in // self.groups
            eye = torch.zeros_like(weight)
            idx = torch.arange(self.c_out)
            eye[idx, idx % per_group, self.k // 2, self.k // 2] = 1.0
            w, b = fuse_conv_bn(eye, self.skip)
            weight, bias = weight + w, bias + b
        ref = self.convs[0][0]
        self.fused = nn.Conv2d(self.c_in, self.c_out, self.k, self.stride, self.k // 2, groups=self.groups,
                               bias=True).to(ref.weight.device, ref.weight.dtype)
        self.fused.weight.copy_(weight)
        self.fused.bias.copy_(bias)
        del self.convs, self.scale, self.skip
        self.convs, self.scale, self.skip = nn.ModuleList(), None, None


class GhostModuleV3(GhostModule):
    """A Ghost module whose primary and cheap convs are `RepConv`s with `branches` branches."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, ratio: int = 2, dw: int = 3, stride: int = 1,
                 act: bool = True, branches: int = 3, scale: bool = True):
        self.branches, self.use_scale = branches, scale
        super().__init__(c_in, c_out, k, ratio, dw, stride, act)

    def make_primary(self, c_in, c_out, k, stride, act):
        return RepConv(c_in, c_out, k, stride, branches=self.branches, scale=self.use_scale, identity=False, act=act)

    def make_cheap(self, c_in, c_out, dw, act):
        return RepConv(c_in, c_out, dw, 1, groups=c_in, branches=self.branches, scale=self.use_scale,
                       identity=True, act=act)


def reparameterize(model: nn.Module) -> nn.Module:
    """Fuse every `RepConv` in `model` in place (the deploy graph); returns `model`."""
    for m in [m for m in model.modules() if isinstance(m, RepConv)]:
        m.fuse()
    return model
