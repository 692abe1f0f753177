"""IoU and Complete-IoU between xyxy boxes (Zheng et al., "Distance-IoU Loss", AAAI 2020)."""
from __future__ import annotations

import math

import torch


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, ciou: bool = True, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise IoU (or CIoU) of xyxy boxes `[..., 4]` that broadcast together -> `[...]`.

    CIoU = IoU - rho^2 / c^2 - alpha * v, where rho is the distance between the centres, c the
    diagonal of the smallest enclosing box, v = 4 / pi^2 * (atan(w2/h2) - atan(w1/h1))^2 measures the
    aspect-ratio mismatch and alpha = v / (1 - IoU + v) its trade-off weight. It lies in (-1, 1]:
    1 only for identical boxes, negative for boxes that are far apart.
    """
    (x1, y1, x2, y2), (u1, v1, u2, v2) = box1.unbind(-1), box2.unbind(-1)
    w1, h1 = x2 - x1, (y2 - y1).clamp(min=eps)
    w2, h2 = u2 - u1, (v2 - v1).clamp(min=eps)

    inter = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0) * \
            (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not ciou:
        return iou

    cw = torch.maximum(x2, u2) - torch.minimum(x1, u1)  # enclosing box
    ch = torch.maximum(y2, v2) - torch.minimum(y1, v1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((u1 + u2 - x1 - x2).pow(2) + (v1 + v2 - y1 - y2).pow(2)) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():  # the paper treats alpha as a constant weight, not something to optimise
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)
