"""Time coco_map (faster-coco-eval) against pycocotools on the same synthetic validation set.

    python benchmarks/bench_coco_map.py --images 500

Both sides start from the same per-image dicts and include building their COCO objects,
so the figure is what a validation epoch pays. Needs pycocotools (a test dependency).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from evaluators.metrics import STAT_NAMES, coco_map


def synthetic_set(n_images: int, nc: int, seed: int):
    """COCO-like images: ~7 GT boxes each over `nc` classes; 100-300 predictions each
    (jittered, sometimes mislabelled GT plus low-score false positives), as after NMS."""
    rng = np.random.default_rng(seed)
    targets, predictions = [], []
    for _ in range(n_images):
        n_gt = int(rng.poisson(7))
        wh = np.exp(rng.uniform(np.log(6), np.log(400), (n_gt, 2)))
        xy = rng.uniform(0, 640, (n_gt, 2))
        gt_boxes = np.concatenate((xy, xy + wh), 1)
        gt_labels = rng.integers(0, nc, n_gt)
        targets.append({"boxes": gt_boxes, "labels": gt_labels})

        n_pred = int(rng.integers(100, 301))
        copies = rng.integers(0, max(n_gt, 1), n_pred) if n_gt else np.zeros(0, int)
        n_copies = min(len(copies), n_pred // 3)
        base = gt_boxes[copies[:n_copies]]
        size = np.tile(base[:, 2:] - base[:, :2], 2)
        jittered = base + rng.normal(0, 0.1, base.shape) * size
        jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 1)
        labels = np.where(rng.random(n_copies) < 0.15, rng.integers(0, nc, n_copies), gt_labels[copies[:n_copies]])
        n_fp = n_pred - n_copies
        fp_wh = np.exp(rng.uniform(np.log(6), np.log(400), (n_fp, 2)))
        fp_xy = rng.uniform(0, 640, (n_fp, 2))
        predictions.append({
            "boxes": np.concatenate((jittered, np.concatenate((fp_xy, fp_xy + fp_wh), 1))),
            "scores": np.concatenate((rng.uniform(0.2, 1.0, n_copies), rng.uniform(0.001, 0.5, n_fp))),
            "labels": np.concatenate((labels, rng.integers(0, nc, n_fp))),
        })
    return targets, predictions


def pycocotools_map(targets, predictions) -> dict[str, float]:
    """The usual pycocotools route: GT dataset in memory, detections through loadRes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, detections = [], []
    for image_id, (t, p) in enumerate(zip(targets, predictions), 1):
        for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for (x1, y1, x2, y2), score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            detections.append({"image_id": image_id, "category_id": label,
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(1, len(targets) + 1)],
                      "categories": [{"id": c} for c in sorted({a["category_id"] for a in annotations})],
                      "annotations": annotations}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, evaluator.stats)}


def timed(fn, repeat: int):
    """(result, median seconds over `repeat` runs)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="validation images (default 500)")
    parser.add_argument("--classes", type=int, default=80, help="number of classes (default 80)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per implementation; the median counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    targets, predictions = synthetic_set(args.images, args.classes, args.seed)
    n_gt = sum(len(t["labels"]) for t in targets)
    n_dt = sum(len(p["labels"]) for p in predictions)
    ours, ours_s = timed(lambda: coco_map(targets, predictions), args.repeat)
    reference, reference_s = timed(lambda: pycocotools_map(targets, predictions), args.repeat)
    max_diff = max(abs(ours[k] - reference[k]) for k in STAT_NAMES)

    console = Console()
    table = Table(title=f"COCO mAP: {args.images} images, {args.classes} classes, "
                        f"{n_gt} GT boxes, {n_dt} predictions (median of {args.repeat})")
    table.add_column("implementation")
    table.add_column("time (s)", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_column("mAP@0.5:0.95", justify="right")
    table.add_column("mAP@0.5", justify="right")
    table.add_row("pycocotools", f"{reference_s:.3f}", "1.0x", f"{reference['map']:.6f}", f"{reference['map50']:.6f}")
    table.add_row("coco_map (faster-coco-eval)", f"{ours_s:.3f}", f"{reference_s / ours_s:.1f}x",
                  f"{ours['map']:.6f}", f"{ours['map50']:.6f}")
    console.print(table)
    same = max_diff <= 1e-9
    console.print(f"all {len(STAT_NAMES)} statistics identical (max |diff| = {max_diff:.1e}): "
                  + ("[green]yes[/green]" if same else "[red]NO[/red]"))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
