"""YOLOv8-style detection loss: task-aligned assignment, BCE classes, CIoU boxes and DFL.

DFL is the Distribution Focal Loss of GFL (Li et al., "Generalized Focal Loss", NeurIPS 2020):
each box side is predicted as a distribution over reg_max integer bins (in stride units) and the
target distance d is taught through its two neighbouring bins, weighted by closeness.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nas.models.head import REG_MAX, bbox2dist, dist2bbox, make_anchors

from .assigner import TaskAlignedAssigner
from .boxes import bbox_iou


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits [N, reg_max], target distances [N] in [0, reg_max - 1) -> per-distance loss [N].

    CE(logits, l) * (l + 1 - d) + CE(logits, l + 1) * (d - l) with l = floor(d): minimal when the
    distribution puts mass (l + 1 - d) on bin l and (d - l) on bin l + 1, whose expectation is d.
    """
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    return (F.cross_entropy(logits, left, reduction="none") * w_left
            + F.cross_entropy(logits, right, reduction="none") * (1 - w_left))


class DetectionLoss:
    """`loss, parts = DetectionLoss(nc)(raw, targets)`.

    raw: the detector's level maps `[B, 4 * reg_max + nc, H, W]`, one per stride.
    targets: `[M, 6]` rows `(batch_idx, cls, x1, y1, x2, y2)` in input pixels.
    loss: scalar `box * box_loss + cls * cls_loss + dfl * dfl_loss` to backpropagate.
    parts: detached floats `box`, `cls`, `dfl`, already multiplied by their gains (they sum to loss).

    Scale: the loss is NOT multiplied by the batch size (Ultralytics does that). Each part is
    divided by the batch's total soft-target mass, so it is an average per positive anchor and does not
    grow with the batch. That matters for the learning rate: with SGD the gradient scales with the
    loss, so Ultralytics' lr0 = 0.01 (tuned for loss x batch, nominal batch 64) corresponds here
    to roughly lr0 x batch size; AdamW normalises the gradient scale away and is unaffected.
    """

    def __init__(self, nc: int, reg_max: int = REG_MAX, strides=(8, 16, 32),
                 box: float = 7.5, cls: float = 0.5, dfl: float = 1.5):
        self.nc, self.reg_max, self.strides = nc, reg_max, tuple(float(s) for s in strides)
        self.gains = {"box": box, "cls": cls, "dfl": dfl}
        self.assigner = TaskAlignedAssigner(nc, topk=10, alpha=0.5, beta=6.0)

    def __call__(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # The loss is small next to the network: computing it in float32 avoids half-precision
        # overflow in exp/atan/log under AMP at no real cost.
        with torch.autocast(raw[0].device.type, enabled=False):
            return self._loss([r.float() for r in raw], targets.float())

    def _loss(self, raw: list[torch.Tensor], targets: torch.Tensor):
        b, no = raw[0].shape[:2]
        if no != 4 * self.reg_max + self.nc:
            raise ValueError(f"expected {4 * self.reg_max + self.nc} channels per level, got {no}")
        flat = torch.cat([r.reshape(b, no, -1) for r in raw], 2).transpose(1, 2)  # [B, A, no]
        pred_dist, pred_logits = flat.split((4 * self.reg_max, self.nc), -1)
        pred_dist = pred_dist.reshape(b, -1, 4, self.reg_max)  # side-major channels, as Detect.decode
        anchors, stride = make_anchors(raw, self.strides)       # stride units, [A, 2] and [A, 1]

        # Boxes from the softmax expectation of each side's bins: stride units, then pixels.
        bins = torch.arange(self.reg_max, device=flat.device, dtype=flat.dtype)
        pred_boxes = dist2bbox((pred_dist.softmax(-1) * bins).sum(-1), anchors) * stride  # [B, A, 4] px

        gt_labels, gt_boxes, gt_mask = pad_targets(targets, b)
        t = self.assigner(pred_logits.detach().sigmoid(), pred_boxes.detach(), anchors * stride,
                          gt_labels, gt_boxes, gt_mask)
        norm = t.scores.sum().clamp(min=1)

        loss_cls = F.binary_cross_entropy_with_logits(pred_logits, t.scores, reduction="sum") / norm
        loss_box = loss_dfl = pred_dist.sum() * 0  # keeps the graph connected when nothing is assigned
        if t.fg_mask.any():
            fg = t.fg_mask
            weight = t.scores.sum(-1)[fg]  # [F] the anchor's soft-target mass
            ciou = bbox_iou(pred_boxes[fg], t.bboxes[fg], ciou=True)
            loss_box = ((1 - ciou) * weight).sum() / norm

            stride_fg = stride.expand(b, -1, -1)[fg]  # [F, 1]
            target_dist = bbox2dist(anchors.expand(b, -1, -1)[fg], t.bboxes[fg] / stride_fg, self.reg_max)
            dfl = distribution_focal_loss(pred_dist[fg].reshape(-1, self.reg_max), target_dist.reshape(-1))
            loss_dfl = (dfl.view(-1, 4).mean(-1) * weight).sum() / norm

        parts = {"box": self.gains["box"] * loss_box, "cls": self.gains["cls"] * loss_cls,
                 "dfl": self.gains["dfl"] * loss_dfl}
        loss = parts["box"] + parts["cls"] + parts["dfl"]
        return loss, {k: float(v.detach()) for k, v in parts.items()}


def pad_targets(targets: torch.Tensor, batch_size: int):
    """[M, 6] (batch_idx, cls, x1, y1, x2, y2) -> labels [B, N], boxes [B, N, 4], mask [B, N] bool,
    N = most boxes in one image; rows past an image's own count are padding (mask False)."""
    dev = targets.device
    idx = targets[:, 0].long()
    counts = torch.bincount(idx, minlength=batch_size)
    n = int(counts.max()) if targets.shape[0] else 0
    labels = torch.zeros(batch_size, n, dtype=torch.long, device=dev)
    boxes = torch.zeros(batch_size, n, 4, device=dev)
    mask = torch.zeros(batch_size, n, dtype=torch.bool, device=dev)
    if n:
        order = torch.sort(idx, stable=True).indices
        idx = idx[order]
        starts = torch.cumsum(counts, 0) - counts             # first row of each image once sorted
        slot = torch.arange(len(idx), device=dev) - starts[idx]  # position within its image
        labels[idx, slot] = targets[order, 1].long()
        boxes[idx, slot] = targets[order, 2:6]
        mask[idx, slot] = True
    return labels, boxes, mask
