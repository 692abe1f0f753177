"""Decoupled anchor-free detection head (YOLOv8-style DFL boxes) and its decoding."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .common import ConvBNAct

REG_MAX = 16
STRIDES = (8, 16, 32)


def make_anchors(feats: list[torch.Tensor], strides, offset: float = 0.5):
    """Cell centres of every level, in stride units: (points [A, 2] as (x, y), strides [A, 1])."""
    points, stride_col = [], []
    for feat, s in zip(feats, strides):
        h, w = feat.shape[-2:]
        dev, dt = feat.device, feat.dtype
        sy, sx = torch.meshgrid(torch.arange(h, device=dev, dtype=dt) + offset,
                                torch.arange(w, device=dev, dtype=dt) + offset, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_col.append(torch.full((h * w, 1), float(s), device=dev, dtype=dt))
    return torch.cat(points), torch.cat(stride_col)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor) -> torch.Tensor:
    """(left, top, right, bottom) distances around anchor points -> xyxy boxes."""
    lt, rb = distance.chunk(2, -1)
    return torch.cat((anchor_points - lt, anchor_points + rb), -1)


def bbox2dist(anchor_points: torch.Tensor, bbox: torch.Tensor, reg_max: int = REG_MAX) -> torch.Tensor:
    """xyxy boxes -> (l, t, r, b) distances, clamped to the DFL range [0, reg_max - 1 - 0.01]."""
    x1y1, x2y2 = bbox.chunk(2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp_(0, reg_max - 1 - 0.01)


class Detect(nn.Module):
    """Per level: box branch (two 3x3 conv-BN-act, 1x1 to 4*reg_max) and class branch (same, 1x1 to nc).

    forward() returns the raw maps [B, 4*reg_max + nc, H, W] per level (what the loss wants);
    decode() turns them into pixel boxes and class scores (what NMS and ONNX want).
    """

    def __init__(self, channels: list[int], nc: int, width: int, reg_max: int = REG_MAX, strides=STRIDES):
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32), persistent=False)
        self.box = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, width, 3), ConvBNAct(width, width, 3), nn.Conv2d(width, 4 * reg_max, 1))
            for c in channels)
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, width, 3), ConvBNAct(width, width, 3), nn.Conv2d(width, nc, 1))
            for c in channels)
        self.reset_bias()

    def reset_bias(self) -> None:
        # Box bias 1.0; class bias assumes ~5 objects per 640px image spread over the level's cells.
        for box, cls, s in zip(self.box, self.cls, self.stride.tolist()):
            nn.init.constant_(box[-1].bias, 1.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / self.nc / (640 / s) ** 2))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat((b(x), c(x)), 1) for x, b, c in zip(feats, self.box, self.cls)]

    def decode(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw level maps -> (boxes [B, A, 4] xyxy in input pixels, scores [B, A, nc] sigmoid)."""
        b = outputs[0].shape[0]
        flat = torch.cat([o.view(b, 4 * self.reg_max + self.nc, -1) for o in outputs], 2)  # [B, C, A]
        dist, cls = flat.split((4 * self.reg_max, self.nc), 1)
        points, strides = make_anchors(outputs, self.stride.tolist())
        bins = torch.arange(self.reg_max, device=dist.device, dtype=dist.dtype)
        dist = dist.view(b, 4, self.reg_max, -1).softmax(2).mul(bins.view(1, 1, -1, 1)).sum(2)  # [B, 4, A]
        boxes = dist2bbox(dist.transpose(1, 2), points.unsqueeze(0)) * strides.unsqueeze(0)
        return boxes, cls.transpose(1, 2).sigmoid()
