"""Trainer overhead: `train()` images/s against a bare forward + loss + backward + step loop.

    .venv/bin/python benchmarks/bench_trainer.py [--arch spaces/reference/ghostnet_v2_yolo.yaml]
        [--imgsz 256] [--batch 16] [--iters 12] [--threads 2] [--workers 0] [--device cpu]

Same model, batch and image size on both sides. The bare loop reuses batches already collated
and on the device, so it measures nothing but the network, the loss and the optimizer. The
trainer adds everything a real run does: data loading (letterbox + augmentation, unless
--no-augment), uint8 -> float on the device, lr schedule, gradient clipping, EMA. Its images/s
is the best training epoch of two (validation excluded). Goal (SPEC section 11): ratio >= 0.8.
"""
from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from evaluators.data import collate, load_dataset
from evaluators.loss import DetectionLoss
from evaluators.train import train
from nas.models import build_model, load_arch


def bare_images_per_s(model, batches, iters: int, device) -> float:
    """Forward, loss, backward and AdamW step on pre-collated batches; best of two timed rounds."""
    criterion = DetectionLoss(model.nc, strides=model.stride.tolist())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(images, targets):
        loss, _ = criterion(model(images.float().div_(255)), targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(*batches[0])  # warm-up: allocator, kernels
    rates = []
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(iters):
            step(*batches[i % len(batches)])
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(iters * len(batches[0][0]) / (time.perf_counter() - t))
    return max(rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="spaces/reference/ghostnet_v2_yolo.yaml")
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=12, help="iterations per timed round / per trainer epoch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-augment", dest="augment", action="store_false")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    n = args.iters * args.batch
    data = f"synthetic:n={n},val={args.batch},nc=4,size={args.imgsz}"
    arch = {**load_arch(args.arch), "nc": 4}
    dataset = load_dataset(data, "train", args.imgsz)
    batches = []
    for start in range(0, min(n, 4 * args.batch), args.batch):
        images, targets, _ = collate([dataset[i] for i in range(start, start + args.batch)])
        batches.append((images.to(device), targets.to(device)))

    torch.manual_seed(0)
    bare = bare_images_per_s(build_model(arch).to(device), batches, args.iters, device)
    torch.manual_seed(0)
    result = train(build_model(arch), data, epochs=2, imgsz=args.imgsz, batch=args.batch, device=args.device,
                   workers=args.workers, augment=args.augment, val_every=2)
    trainer = max(h["images_per_s"] for h in result.history)

    table = Table(title=f"{args.arch} nc 4, imgsz {args.imgsz}, batch {args.batch}, {args.device}, "
                        f"{args.threads} threads, {args.workers} workers, augment {args.augment}")
    table.add_column("loop")
    table.add_column("images/s", justify="right")
    table.add_row("bare forward + loss + backward + AdamW step", f"{bare:.1f}")
    table.add_row("train() (data, schedule, clipping, EMA)", f"{trainer:.1f}")
    table.add_row("ratio (goal >= 0.8)", f"{trainer / bare:.2f}")
    console = Console()
    if not console.is_terminal:  # a log file: do not squeeze the table into 80 columns
        console = Console(width=150)
    console.print(table)


if __name__ == "__main__":
    main()
