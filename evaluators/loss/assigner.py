"""Task-Aligned Assigner (Feng et al., "TOOD: Task-aligned One-stage Object Detection", ICCV 2021).

Each ground-truth box picks the anchors whose *current* predictions are both well classified and
well localised, measured by the alignment metric t = s^alpha * IoU^beta. The targets are soft:
an anchor's class target is t normalised so that the best anchor of each GT gets that GT's best IoU.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .boxes import bbox_iou


class Assignment(NamedTuple):
    labels: torch.Tensor   # [B, A] long, class of the assigned GT (0 where background)
    bboxes: torch.Tensor   # [B, A, 4] xyxy pixels of the assigned GT (GT 0 of the image where background)
    scores: torch.Tensor   # [B, A, nc] soft class targets (0 where background)
    fg_mask: torch.Tensor  # [B, A] bool, anchor assigned to some GT
    gt_index: torch.Tensor  # [B, A] long, index of the assigned GT in the padded GT list


class TaskAlignedAssigner:
    """Assign padded ground truth to anchors; everything is computed in float32 without gradients."""

    def __init__(self, nc: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9):
        self.nc, self.topk, self.alpha, self.beta, self.eps = nc, topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, pred_scores: torch.Tensor, pred_bboxes: torch.Tensor, anchor_points: torch.Tensor,
                 gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, gt_mask: torch.Tensor) -> Assignment:
        """
        pred_scores [B, A, nc] (sigmoid), pred_bboxes [B, A, 4] and anchor_points [A, 2] in pixels;
        gt_labels [B, M], gt_bboxes [B, M, 4] pixels, gt_mask [B, M] bool (False on padding rows).
        """
        pred_scores, pred_bboxes = pred_scores.float(), pred_bboxes.float()
        anchor_points, gt_bboxes = anchor_points.float(), gt_bboxes.float()
        b, a, _ = pred_scores.shape
        m = gt_bboxes.shape[1]
        if m == 0:  # no image of the batch has a box: everything is background
            dev = pred_scores.device
            return Assignment(torch.zeros(b, a, dtype=torch.long, device=dev),
                              torch.zeros(b, a, 4, device=dev), torch.zeros_like(pred_scores),
                              torch.zeros(b, a, dtype=torch.bool, device=dev),
                              torch.zeros(b, a, dtype=torch.long, device=dev))
        gt_labels = gt_labels.long()

        candidates = self.inside_boxes(anchor_points, gt_bboxes) & gt_mask.bool().unsqueeze(-1)  # [B, M, A]
        metric, overlaps = self.alignment(pred_scores, pred_bboxes, gt_labels, gt_bboxes, candidates)
        positive = self.top_candidates(metric, candidates)
        positive = self.resolve_conflicts(positive, overlaps)

        fg_mask = positive.any(1)          # [B, A]
        gt_index = positive.float().argmax(1)  # [B, A]; 0 for background anchors, masked out below
        labels = gt_labels.gather(1, gt_index)
        bboxes = gt_bboxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))

        # TOOD normalisation, per GT: t / max t * max IoU, over the anchors that GT finally keeps.
        metric = metric * positive
        max_metric = metric.amax(-1, keepdim=True)                     # [B, M, 1]
        max_iou = (overlaps * positive).amax(-1, keepdim=True)         # [B, M, 1]
        norm = (metric * max_iou / (max_metric + self.eps)).amax(1)    # [B, A]; one GT per anchor at most
        scores = F.one_hot(labels, self.nc).float() * (norm * fg_mask).unsqueeze(-1)
        return Assignment(labels, bboxes, scores, fg_mask, gt_index)

    @staticmethod
    def inside_boxes(points: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
        """[A, 2] points, [B, M, 4] boxes -> [B, M, A] bool: the point lies strictly inside the box."""
        lt = points.view(1, 1, -1, 2) - boxes[..., None, :2]
        rb = boxes[..., None, 2:] - points.view(1, 1, -1, 2)
        return torch.cat((lt, rb), -1).amin(-1) > eps

    def alignment(self, pred_scores, pred_bboxes, gt_labels, gt_bboxes, candidates):
        """Alignment metric s^alpha * CIoU^beta and the clamped CIoU, both [B, M, A], zero off candidates."""
        b, m, a = candidates.shape
        # score each anchor predicts for the class of each GT: [B, nc, A] gathered on dim 1 by GT class
        scores = pred_scores.transpose(1, 2).gather(1, gt_labels.unsqueeze(-1).expand(-1, -1, a))
        overlaps = torch.zeros(b, m, a, device=pred_scores.device)
        # CIoU only where it is needed: the candidates (a small fraction of B * M * A).
        gt = gt_bboxes.unsqueeze(2).expand(-1, -1, a, -1)[candidates]
        pd = pred_bboxes.unsqueeze(1).expand(-1, m, -1, -1)[candidates]
        overlaps[candidates] = bbox_iou(gt, pd, ciou=True).clamp(min=0)
        metric = scores.pow(self.alpha) * overlaps.pow(self.beta) * candidates
        return metric, overlaps

    def top_candidates(self, metric: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[B, M, A] bool: the top-k anchors of each GT by metric, chosen among its candidates only."""
        k = min(self.topk, metric.shape[-1])
        # Non-candidates rank below every candidate (even one of metric 0), so they are never picked.
        idx = metric.masked_fill(~candidates, -1.0).topk(k, dim=-1).indices
        top = torch.zeros_like(candidates).scatter_(-1, idx, True)
        return top & candidates  # a GT with fewer than k candidates keeps only those

    @staticmethod
    def resolve_conflicts(positive: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
        """An anchor claimed by several GTs keeps only the claimant it overlaps most (highest CIoU)."""
        claimed_twice = positive.sum(1, keepdim=True) > 1                               # [B, 1, A]
        best_claimant = overlaps.masked_fill(~positive, -1.0).argmax(1)                 # [B, A]
        best = F.one_hot(best_claimant, overlaps.shape[1]).permute(0, 2, 1).bool()     # [B, M, A]
        return torch.where(claimed_twice, best, positive)
