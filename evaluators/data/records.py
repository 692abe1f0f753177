"""What every data source produces: one `Sample` per usable image and a `Report` of what was skipped.

Readers (Ultralytics YAML, COCO JSON, synthetic) differ only in how they find images and boxes;
from here on all boxes are xyxy in original image pixels and all classes are contiguous 0..nc-1.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Problems a dataset may have. Each is counted and the offending image or row is skipped.
PROBLEMS = {
    "missing_image": "missing image",
    "bad_image": "undecodable image",
    "bad_row": "bad label row",
    "out_of_range": "box out of image",
    "bad_class": "bad class id",
    "degenerate_box": "zero-area box",
    "orphan_label": "label file without an image",
}
MAX_EXAMPLES = 10
# Boxes may stick out of the image by this fraction of its size (rounding in label tools); they are clipped.
RANGE_TOLERANCE = 0.01


@dataclass
class Sample:
    """One usable image and its targets in original pixels."""

    id: int
    path: Path | None  # None for in-memory (synthetic) images
    shape: tuple[int, int]  # (h, w) as seen after EXIF orientation
    boxes: np.ndarray  # float32 [N, 4] xyxy
    labels: np.ndarray  # int64 [N]


class Report:
    """Counts of skipped images and rows, plus the first few messages saying where."""

    def __init__(self):
        self.counts = Counter({kind: 0 for kind in PROBLEMS})
        self.examples: list[str] = []
        self._lock = threading.Lock()  # images are checked from several threads

    def add(self, kind: str, message: str, n: int = 1):
        assert kind in PROBLEMS, kind
        with self._lock:
            self.counts[kind] += n
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(message)

    def as_dict(self, samples: list[Sample]) -> dict:
        boxes = sum(len(s.labels) for s in samples)
        background = sum(len(s.labels) == 0 for s in samples)
        return {"images": len(samples), "boxes": boxes, "background": background,
                **dict(self.counts), "examples": list(self.examples)}


def summarize(name: str, report: dict) -> str:
    """One line for logs: 'coco128 train: 128 images, 941 boxes, 2 background; skipped 1 missing image'."""
    line = f"{name}: {report['images']} images, {report['boxes']} boxes, {report['background']} background"
    skipped = [f"{report[kind]} {label}" for kind, label in PROBLEMS.items() if report.get(kind)]
    return line + ("; skipped " + ", ".join(skipped) if skipped else "")


def clean_boxes(classes: np.ndarray, boxes: np.ndarray, shape: tuple[int, int], nc: int,
                report: Report, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Drop and count bad rows; clip the rest to the image.

    classes: float [N] class ids as read; boxes: float [N, 4] xyxy in pixels of an image of `shape` (h, w).
    Returns (boxes float32 [M, 4], labels int64 [M]). Each dropped row is counted once, first reason wins.
    """
    classes = np.asarray(classes, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = shape
    size = np.array([w, h, w, h], dtype=np.float64)

    bad_class = (classes != np.round(classes)) | (classes < 0) | (classes >= nc)
    outside = ((boxes < -RANGE_TOLERANCE * size) | (boxes > (1 + RANGE_TOLERANCE) * size)).any(1) & ~bad_class
    clipped = np.clip(boxes, 0, size)
    degenerate = ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])) & ~bad_class & ~outside

    for kind, rows, why in (("bad_class", bad_class, f"class id not in 0..{nc - 1}"),
                            ("out_of_range", outside, "box outside the image"),
                            ("degenerate_box", degenerate, "zero-area box")):
        if rows.any():
            report.add(kind, f"{where}: {int(rows.sum())} row(s) with {why}", int(rows.sum()))
    keep = ~(bad_class | outside | degenerate)
    return clipped[keep].astype(np.float32), classes[keep].astype(np.int64)


@dataclass
class Source:
    """What a reader hands to the dataset: usable samples, their fitted images (None = decode on use)."""

    name: str  # for log lines, e.g. "coco128/data.yaml train"
    names: list[str]
    category_ids: list[int]  # original id of each contiguous class index
    samples: list[Sample]
    images: list[np.ndarray | None]  # HWC uint8 RGB, long side = imgsz
    report: Report
    held_out: dict | None = None  # a held-out split's counts (holdout.Holdout.counts), else None
