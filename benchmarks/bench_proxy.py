"""What one proxy evaluation costs: the hand-designed baseline detector trained on the built-in data.

    .venv/bin/python benchmarks/bench_proxy.py [--arch spaces/reference/ghostnet_v2_yolo.yaml]
        [--data synthetic] [--epochs 3] [--imgsz 256] [--batch 16] [--threads N] [--workers 0]

The architecture's nc is set to the data's. Prints one line per epoch (losses, mAP, timings) and
the total wall time with the final mAP@0.5:0.95 / mAP@0.5 of the EMA weights.
"""
from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from evaluators.data import load_dataset
from evaluators.train import train
from nas.models import build_model, load_arch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="spaces/reference/ghostnet_v2_yolo.yaml")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    train_set = load_dataset(args.data, "train", args.imgsz, augment=True)
    val_set = load_dataset(args.data, "val", args.imgsz)
    data_time = time.perf_counter() - start
    torch.manual_seed(args.seed)
    model = build_model({**load_arch(args.arch), "nc": train_set.nc})
    params = sum(p.numel() for p in model.parameters())
    result = train(model, train_set, val=val_set, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                   device=args.device, workers=args.workers, seed=args.seed)
    wall = time.perf_counter() - start

    table = Table(title=f"proxy run: {args.arch} ({params / 1e6:.2f} M params), {train_set.summary()}, "
                        f"imgsz {args.imgsz}, batch {args.batch}, {torch.get_num_threads()} threads, {args.device}")
    for col in ("epoch", "loss", "box", "cls", "dfl", "mAP", "mAP50", "train s", "val s", "img/s"):
        table.add_column(col, justify="right")
    for h in result.history:
        table.add_row(str(h["epoch"]), *(f"{h[k]:.3f}" for k in ("loss", "box", "cls", "dfl")),
                      *(f"{h[k]:.4f}" for k in ("map", "map50")), f"{h['time']:.1f}", f"{h['val_time']:.1f}",
                      f"{h['images_per_s']:.1f}")
    console = Console()
    if not console.is_terminal:  # a log file: do not squeeze the table into 80 columns
        console = Console(width=150)
    console.print(table)
    console.print(f"wall time {wall:.1f} s (data {data_time:.1f} s, train() {result.time:.1f} s); "
                  f"final mAP {result.final['map']:.4f}, mAP50 {result.final['map50']:.4f}")


if __name__ == "__main__":
    main()
