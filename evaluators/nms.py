"""Greedy non-maximum suppression in plain torch (torchvision is not available here).

`nms` walks the candidates best score first, keeps a box unless a better kept box overlaps it
by more than `iou_threshold`, and stops at `max_det`. Candidates go in blocks of BLOCK: one
IoU matrix against the boxes already kept, one inside the block, then a single pass over the
block's small boolean matrix. The Python loop touches each candidate once with a cheap check
and never computes an IoU itself; with `max_det=300` even 30k candidates take milliseconds.
"""
from __future__ import annotations

import torch

MAX_NMS = 30_000  # candidates kept (best scores first) before NMS, as Ultralytics' `max_nms`
BLOCK = 256  # boxes resolved together: one [BLOCK, BLOCK] IoU matrix per step


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes [N, 4] x [M, 4] -> [N, M]."""
    ax1, ay1, ax2, ay2 = (c[:, None] for c in a.unbind(1))
    bx1, by1, bx2, by2 = b.unbind(1)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
    inter *= (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)
    union = ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)) - inter
    return inter.div_(union.clamp_(min=torch.finfo(a.dtype).tiny))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
        max_det: int | None = None) -> torch.Tensor:
    """Greedy NMS: indices (int64, into `boxes`) of the kept boxes, best score first.

    A box is suppressed when its IoU with a better kept box is strictly greater than
    `iou_threshold` (torchvision's rule). Ties in score keep the input order.
    Stops once `max_det` boxes are kept (None: no cap). Cost: one [kept, BLOCK] and one
    [BLOCK, BLOCK] IoU matrix per block of BLOCK candidates.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    limit = len(order) if max_det is None else max_det
    keep: list[int] = []  # positions in sorted order
    kept_boxes = sorted_boxes[:0]
    for start in range(0, len(order), BLOCK):
        if len(keep) >= limit:
            break
        block = sorted_boxes[start:start + BLOCK]
        # A box kept in an earlier block removes everything it overlaps: one matrix decides it.
        alive = (box_iou(kept_boxes, block) <= iou_threshold).all(0).cpu().numpy()
        # Inside the block the greedy order matters: walk it once over a small CPU matrix.
        overlaps = (box_iou(block, block) > iou_threshold).cpu().numpy()
        block_keep = []
        for i in range(len(block)):
            if alive[i]:
                block_keep.append(i)
                if len(keep) + len(block_keep) >= limit:
                    break
                alive[i + 1:] &= ~overlaps[i, i + 1:]
        keep += [start + i for i in block_keep]
        kept_boxes = torch.cat((kept_boxes, block[block_keep]))
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
                max_det: int = 300, max_nms: int = MAX_NMS) -> torch.Tensor:
    """Class-aware NMS: boxes of different labels never suppress each other.

    Shifts every class into its own region of the plane (offset = label * span, span larger
    than any box coordinate range), so one plain NMS pass handles all classes at once.
    Only the `max_nms` best-scoring candidates enter NMS; at most `max_det` indices come back.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    candidates = None
    if len(scores) > max_nms:
        candidates = scores.topk(max_nms).indices
        boxes, scores, labels = boxes[candidates], scores[candidates], labels[candidates]
    # Span covers the whole coordinate range (even negative coordinates), so shifted classes never overlap.
    span = boxes.max() - boxes.min() + 1
    shifted = boxes + (labels.to(boxes.dtype) * span)[:, None]
    keep = nms(shifted, scores, iou_threshold, max_det=max_det)
    return keep if candidates is None else candidates[keep]
