"""From decoded detector outputs to per-image detections in original image pixels.

Validation protocol (SPEC section 6): keep scores > conf (0.001), class-aware NMS at IoU 0.7,
at most 300 boxes per image, then map the boxes back through the letterbox.

One label per anchor: each anchor proposes only its best class. Ultralytics' YOLOv8 *val*
uses multi_label=True (an anchor may propose several classes), which adds a few tenths of
mAP; for ranking candidates of a search the single-label rule is the cheaper, standard
predict-time behaviour, and every candidate is measured the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from evaluators.nms import batched_nms


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, conf: float = 0.001, iou: float = 0.7,
                max_det: int = 300) -> list[dict[str, torch.Tensor]]:
    """Boxes [B, A, 4] xyxy (input pixels) and class scores [B, A, nc] in 0..1 -> one dict per image:
    {"boxes": [K, 4], "scores": [K], "labels": [K] int64}, best score first, K <= max_det."""
    results = []
    for image_boxes, image_scores in zip(boxes, scores):
        best, labels = image_scores.max(-1)
        candidate = best > conf
        image_boxes, best, labels = image_boxes[candidate], best[candidate], labels[candidate]
        keep = batched_nms(image_boxes, best, labels, iou, max_det=max_det)
        results.append({"boxes": image_boxes[keep], "scores": best[keep], "labels": labels[keep]})
    return results


def scale_boxes_to_original(boxes: torch.Tensor, ratio, pad, orig_shape) -> torch.Tensor:
    """Letterboxed xyxy pixels -> original image pixels, clipped to the image (a new tensor).

    `ratio`, `pad` = (left, top) and `orig_shape` = (h, w) come from the dataset's info dict:
    original = (letterboxed - pad) / ratio. `ratio` may also be a (width, height) pair.
    """
    rx, ry = (float(ratio),) * 2 if np.ndim(ratio) == 0 else map(float, ratio)
    left, top = map(float, pad)
    h, w = map(float, orig_shape)
    out = boxes.clone()
    out[..., 0::2] = ((out[..., 0::2] - left) / rx).clamp(0, w)
    out[..., 1::2] = ((out[..., 1::2] - top) / ry).clamp(0, h)
    return out
