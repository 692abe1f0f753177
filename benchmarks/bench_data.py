"""How fast the data pipeline feeds a proxy training.

    .venv/bin/python benchmarks/bench_data.py [--coco128 PATH] [--imgsz 320] [--workers 0]

Measures: generating the default synthetic set (cold, then from the per-process cache), opening
coco128 (cold decode, then from the decoded-image cache), and loader throughput in images/s with
and without augmentation.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from evaluators.data import clear_image_cache, load_dataset, make_loader
from evaluators.data.synthetic import generate


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def throughput(dataset, batch_size: int, workers: int, epochs: int = 2) -> float:
    loader = make_loader(dataset, batch_size, shuffle=True, workers=workers, seed=0)
    next(iter(loader))  # start workers before timing
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _, _ in loader:
            n += len(images)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coco128", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/coco128")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    table = Table(title=f"data pipeline, imgsz {args.imgsz}, batch {args.batch}, workers {args.workers}")
    for col in ("what", "value"):
        table.add_column(col)

    generate.cache_clear()
    syn, cold = timed(lambda: load_dataset("synthetic", "train", args.imgsz))
    _, warm = timed(lambda: load_dataset("synthetic", "train", args.imgsz))
    table.add_row(f"synthetic train ({len(syn)} images): cold / cached", f"{cold:.2f} s / {warm:.3f} s")

    clear_image_cache()
    data = args.coco128 / "data.yaml"
    coco, cold = timed(lambda: load_dataset(data, "train", args.imgsz))
    _, warm = timed(lambda: load_dataset(data, "train", args.imgsz))
    table.add_row(f"coco128 train ({len(coco)} images): cold / cached", f"{cold:.2f} s / {warm:.3f} s")

    for name, spec in (("synthetic", "synthetic"), ("coco128", data)):
        for augment in (False, True):
            ds = load_dataset(spec, "train", args.imgsz, augment=augment)
            rate = throughput(ds, args.batch, args.workers)
            table.add_row(f"{name} loader, augment={augment}", f"{rate:.0f} images/s")
    Console().print(table)


if __name__ == "__main__":
    main()
