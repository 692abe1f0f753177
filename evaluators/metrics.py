"""COCO box mAP with faster-coco-eval (same numbers as pycocotools, several times faster).

The COCO ground truth and detections are built in memory straight from per-image dicts;
nothing touches the disk. Protocol: the standard COCOeval "bbox" parameters (IoU 0.50:0.95,
areas small/medium/large, at most 100 detections per image and class ranking), GT `area` =
w * h in original pixels, no crowd boxes.

Undefined values: pycocotools reports -1 where a metric has no ground truth to measure
(an area range without GT boxes, or a dataset without any GT). Here they come back as 0.0,
so every value is a finite number in [0, 1] that an optimiser can use. Classes that occur
only in the predictions have no GT and are left out of the mean, exactly as in pycocotools.
"""
from __future__ import annotations

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

# Names of COCOeval's 12 summary statistics, in its order.
STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
              "mar1", "mar10", "mar100", "mar_small", "mar_medium", "mar_large")


def _quiet(*args, **kwargs) -> None:
    """Print function for faster-coco-eval: it logs every step otherwise."""


def _as_numpy(x, dtype, width: int | None = None) -> np.ndarray:
    """Tensor, array or list -> numpy array of `dtype` ([N, width] when width is given)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=dtype)
    return x.reshape(-1, width) if width else x.reshape(-1)


def _stack(images: list[dict], with_scores: bool):
    """Per-image dicts -> flat arrays: image ids (1-based), xywh boxes, labels, scores."""
    boxes = [_as_numpy(d["boxes"], np.float64, 4) for d in images]
    counts = [len(b) for b in boxes]
    image_ids = np.repeat(np.arange(1, len(images) + 1), counts)
    xyxy = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    xywh = np.concatenate((xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]), 1)
    labels = np.concatenate([_as_numpy(d["labels"], np.int64) for d in images] or [np.zeros(0, np.int64)])
    scores = None
    if with_scores:
        scores = np.concatenate([_as_numpy(d["scores"], np.float64) for d in images] or [np.zeros(0)])
    return image_ids, xywh, labels, scores


def _annotations(image_ids, xywh, labels, scores=None) -> list[dict]:
    """Flat arrays -> COCO annotation dicts (ids from 1: faster-coco-eval reserves 0 for 'unmatched').

    Bulk `tolist()` then one comprehension: the Python-level cost per box is a single dict.
    """
    area = (xywh[:, 2] * xywh[:, 3]).tolist()
    rows = zip(range(1, len(labels) + 1), image_ids.tolist(), labels.tolist(), xywh.tolist(), area)
    if scores is None:
        return [{"id": i, "image_id": img, "category_id": c, "bbox": b, "area": a, "iscrowd": 0}
                for i, img, c, b, a in rows]
    return [{"id": i, "image_id": img, "category_id": c, "bbox": b, "area": a, "iscrowd": 0, "score": s}
            for (i, img, c, b, a), s in zip(rows, scores.tolist())]


def coco_map(targets: list[dict], predictions: list[dict]) -> dict[str, float]:
    """COCO box metrics over a dataset.

    targets: one dict per image {"boxes": [N, 4] xyxy original pixels, "labels": [N]};
    predictions: one dict per image, same order, {"boxes", "scores", "labels"}.
    Arrays or tensors. Returns {"map" (0.50:0.95), "map50", "map75", "map_small", ...,
    "mar100", ...} (STAT_NAMES), undefined values as 0.0 (see the module docstring).
    """
    if len(targets) != len(predictions):
        raise ValueError(f"coco_map: {len(targets)} target images but {len(predictions)} prediction images")
    gt = _stack(targets, with_scores=False)
    dt = _stack(predictions, with_scores=True)
    if len(gt[2]) == 0 or len(dt[2]) == 0:
        # No GT: nothing is defined (pycocotools: all -1). No predictions: every AP and AR is 0.
        return dict.fromkeys(STAT_NAMES, 0.0)

    images = [{"id": i} for i in range(1, len(targets) + 1)]
    categories = [{"id": c} for c in np.union1d(gt[2], dt[2]).tolist()]
    coco_gt = COCO({"images": images, "categories": categories, "annotations": _annotations(*gt[:3])},
                   print_function=_quiet)
    # Built directly rather than through loadRes, which would re-walk every detection in Python.
    coco_dt = COCO({"images": images, "categories": categories, "annotations": _annotations(*dt)},
                   print_function=_quiet)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {name: max(float(value), 0.0) for name, value in zip(STAT_NAMES, evaluator.stats)}
