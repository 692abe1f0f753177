"""`nas train ARCH.yaml --data D --epochs N --out DIR`: train an architecture, keep its EMA weights.

Writes DIR/weights.pt (state dict of the EMA model, unfused: `nas val` and `nas onnx` load it),
DIR/arch.yaml (the architecture trained, its nc set to the data's) and DIR/metrics.json
(per-epoch losses and mAP, final and best values, the data report, which images were validated
on (`splits`, see evaluators.data.describe_split) and timings).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from nas.errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an architecture on a dataset (proxy or full training)",
        description="Train the detector an architecture YAML describes: SGD or AdamW with warm-up and a "
                    "cosine schedule, EMA weights (validated and saved), AMP on CUDA. Writes weights.pt, "
                    "arch.yaml and metrics.json to --out.")
    p.add_argument("arch", type=Path, help="architecture YAML")
    p.add_argument("--data", default="synthetic",
                   help="dataset: 'synthetic[:n=..,nc=..,seed=..]', an Ultralytics data YAML, a COCO JSON, "
                        "'train.json,val.json' or a COCO folder; data without a val split is validated on a "
                        "held-out 20%% of its training images (default: synthetic)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    p.add_argument("--imgsz", type=int, default=None, help="input size in pixels (default: the architecture's)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default: 16)")
    add_device_args(p)
    p.add_argument("--optimizer", choices=("auto", "sgd", "adamw"), default="auto",
                   help="default auto: AdamW below 10k iterations, else SGD")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default: per optimizer)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, shuffling and augmentation (default: 0)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop after the epoch during which this many seconds have passed")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="train without augmentation")
    p.add_argument("--out", type=Path, required=True, help="folder for weights.pt, arch.yaml, metrics.json")
    p.set_defaults(run=run)


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    p.add_argument("--workers", type=int, default=0, help="data loader processes (default: 0, in-process)")


def check_common(args: argparse.Namespace) -> None:
    """Refusals shared with `nas val`, before anything slow happens."""
    if args.imgsz is not None and args.imgsz < 32:
        raise UserError(f"--imgsz must be at least 32 pixels, got {args.imgsz}")
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: CUDA is not available on this machine (use --device cpu)")


def model_for_data(arch_path: Path, data: str, imgsz: int | None, split: str, augment: bool, quiet: bool = False):
    """(architecture dict with the data's nc, dataset split, imgsz): loads the data first, prints its
    summary line (and a note when val is held out of the training images), and adapts the number of
    classes (with a note) so reference YAMLs train on any data.
    quiet: those lines go to stderr (stdout is kept for one JSON object)."""
    from evaluators.data import load_dataset
    from nas.models import load_arch

    if not arch_path.is_file():
        raise UserError(f"architecture file not found: {arch_path}")
    arch = load_arch(str(arch_path))
    imgsz = imgsz or arch["imgsz"]
    dataset = load_dataset(data, split, imgsz, augment=augment)
    out = sys.stderr if quiet else sys.stdout
    print(dataset.summary(), file=out)
    if dataset.split_note and split in ("train", "val"):  # not news when scoring a test split
        print(f"note: {dataset.split_note}", file=out)
    if arch["nc"] != dataset.nc:
        print(f"note: {arch_path} has nc {arch['nc']}; using the data's {dataset.nc} classes", file=out)
        arch = {**arch, "nc": dataset.nc}
    return arch, dataset, imgsz


def run(args: argparse.Namespace) -> int:
    check_common(args)
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if args.time_limit is not None and args.time_limit <= 0:
        raise UserError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")

    import torch

    from evaluators.data import load_dataset
    from evaluators.train import train
    from nas.models import build_model, save_arch

    start = time.perf_counter()
    arch, train_set, imgsz = model_for_data(args.arch, args.data, args.imgsz, "train", args.augment)
    val_set = load_dataset(args.data, "val", imgsz)
    print(val_set.summary())
    torch.manual_seed(args.seed)  # the initial weights
    model = build_model(arch)

    with EpochProgress(args.epochs) as progress:
        result = train(model, train_set, val=val_set, epochs=args.epochs, imgsz=imgsz, batch=args.batch,
                       device=args.device, optimizer=args.optimizer, lr=args.lr, workers=args.workers,
                       seed=args.seed, time_limit=args.time_limit, callback=progress.epoch_done,
                       on_batch=progress.batch_done)

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in result.ema.state_dict().items()}, args.out / "weights.pt")
    save_arch(arch, args.out / "arch.yaml")
    summary = result.to_dict()
    report = {"arch": str(args.arch), "data": args.data, "splits": train_set.split,
              "dataset": summary.pop("data"), "imgsz": imgsz,
              "epochs": args.epochs, "batch": args.batch, "device": args.device, "optimizer": args.optimizer,
              "lr": args.lr, "seed": args.seed, "time_limit": args.time_limit, "augment": args.augment, **summary,
              "wall_time": time.perf_counter() - start, "torch": torch.__version__,
              "python": platform.python_version()}
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")

    f = result.final
    why = f" (stopped: time limit of {args.time_limit:g} s)" if result.stopped == "time_limit" else ""
    print(f"{result.epochs_run} epochs in {result.time:.1f} s{why}: mAP {f['map']:.4f}  mAP50 {f['map50']:.4f}  "
          f"(best mAP {result.best['map']:.4f} at epoch {result.best['epoch']})")
    print(f"wrote {args.out / 'weights.pt'}, {args.out / 'arch.yaml'}, {args.out / 'metrics.json'}")
    return 0


class EpochProgress:
    """A rich progress bar per epoch with the running loss, then one summary line per epoch."""

    def __init__(self, epochs: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs = epochs
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[loss]}"), TimeElapsedColumn(),
                                 console=Console(file=sys.stdout), transient=True)
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def batch_done(self, epoch: int, i: int, batches: int, losses: dict) -> None:
        if i == 0:
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=batches, loss="")
        loss = sum(losses.values())
        self.progress.update(self.task, advance=1, loss=f"loss {loss:.3f} (box {losses['box']:.3f} "
                                                        f"cls {losses['cls']:.3f} dfl {losses['dfl']:.3f})")

    def epoch_done(self, epoch: int, row: dict) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        scores = f"  mAP {row['map']:.4f}  mAP50 {row['map50']:.4f}" if "map" in row else ""
        self.progress.console.print(
            f"epoch {row['epoch']}/{self.epochs}  loss {row['loss']:.3f} (box {row['box']:.3f} cls {row['cls']:.3f} "
            f"dfl {row['dfl']:.3f}){scores}  {row['time']:.1f} s  {row['images_per_s']:.1f} img/s",
            highlight=False, soft_wrap=True)
