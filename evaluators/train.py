"""Proxy training of one detector (SPEC section 6, "Trainer").

    result = train(model, "synthetic", epochs=10, imgsz=320, batch=16)
    result.final["map"], result.history[-1]["loss"], result.ema  # the averaged model that was scored

One iteration: uint8 images -> float 0..1 on the device, forward (autocast on CUDA), loss,
backward of loss x batch size, gradient clipping, optimizer step, EMA update. The learning rate
warms up linearly, then follows a cosine down to `lr * lrf`, set every iteration. Validation
scores the EMA weights. The hot loop reads back nothing but the loss parts the loss already
returns as floats, so on a GPU it syncs once per iteration, not once per statistic.

Loss scale: `DetectionLoss` is a per-image mean; like Ultralytics we backpropagate it times the
batch size, so Ultralytics' learning rates carry over (SGD 0.01, AdamW 0.002 at 4 classes) and
gradient clipping at norm 10 bites where it bites there. Weight decay is scaled by batch / 64
(Ultralytics' nominal batch) so that the decay per image seen does not depend on the batch.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from evaluators.data import load_dataset, make_loader
from evaluators.ema import ModelEMA
from evaluators.loss import DetectionLoss
from evaluators.validate import evaluate
from nas.errors import UserError

NOMINAL_BATCH = 64  # the batch size weight decay is tuned for (Ultralytics' nbs)
AUTO_SGD_ITERATIONS = 10_000  # "auto": AdamW for shorter runs (every proxy run), SGD for longer ones


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the run is diverging (or the weights were NaN already)."""


class Stop(Exception):
    """Raise from the epoch callback (or return False) to end training after this epoch."""


@dataclass
class TrainResult:
    history: list[dict]        # one dict per epoch run: loss parts, lr, time, images/s, map/map50 if validated
    final: dict                # validation metrics of the EMA model after the last epoch run
    best: dict                 # the validated epoch with the highest mAP (its history entry)
    epochs_run: int
    stopped: str               # "completed", "time_limit" or "callback"
    time: float                # seconds for the whole run, data loading included
    data: dict = field(default_factory=dict)  # summaries and reports of the train and val sets
    ema: nn.Module | None = field(default=None, repr=False)  # the averaged model that was validated

    def to_dict(self) -> dict:
        """Everything but the model, ready for json.dump."""
        return {"final": self.final, "best": self.best, "epochs_run": self.epochs_run, "stopped": self.stopped,
                "time": self.time, "history": self.history, "data": self.data}


def train(model: nn.Module, data: str | Dataset = "synthetic", epochs: int | None = 10, imgsz: int | None = None,
          batch: int = 16, device: str = "cpu", optimizer: str = "auto", lr: float | None = None,
          lrf: float = 0.01, momentum: float = 0.937, weight_decay: float = 5e-4, warmup: float = 1.0,
          warmup_iters: int | None = None, ema_decay: float = 0.9999, ema_tau: float = 2000.0,
          amp: bool = True, clip: float = 10.0, workers: int = 0, seed: int = 0, augment: bool = True,
          time_limit: float | None = None, val: str | Dataset | None = None, val_every: int = 1,
          callback: Callable[[int, dict], bool | None] | None = None,
          on_batch: Callable[[int, int, int, dict], None] | None = None, steps: int | None = None) -> TrainResult:
    """Train `model` in place on `data` and validate its EMA; see the module docstring for the loop.

    data / val: a dataset spec (train and val splits loaded at `imgsz`, default the model's) or
        datasets; with a dataset as `data`, pass `val` too. `augment` applies to a spec's train split
        (a dataset brings its own augmentation setting).
    optimizer: "sgd" (nesterov, `momentum`), "adamw" (betas (momentum, 0.999)) or "auto" (AdamW
        with Ultralytics' lr 0.002 * 5 / (4 + nc) and momentum 0.9 when the run has fewer than
        10k iterations, else SGD). lr default: 0.01 for SGD.
    warmup: epochs (fractional allowed) of linear warm-up from 0; `warmup_iters` overrides it.
    Weight decay goes to conv/linear weights only, never to BatchNorm parameters or biases.
    amp: autocast to float16 with a GradScaler, on CUDA only. clip: max gradient norm.
    steps: the training length in optimizer steps instead of epochs (it overrides `epochs`), rounded
        up to whole epochs: the same amount of learning on a data set of any size.
    time_limit: seconds; training stops after the epoch during which it ran out.
    callback(epoch, metrics): called after every epoch with its 0-based index and its history entry
        (whose "epoch" is the 1-based count); returning False or raising `Stop` ends training (any other exception, e.g. a pruning signal,
        propagates to the caller). on_batch(epoch, i, batches, running_losses): progress display,
        0-based indices, running means of the loss parts.
    Raises NonFiniteLoss on a NaN/inf loss, UserError when model and data disagree on classes.
    """
    start = time.perf_counter()
    if (steps is None and (epochs or 0) < 1) or (steps is not None and steps < 1) or batch < 1 or val_every < 1:
        raise ValueError(f"epochs (or steps), batch and val_every must be >= 1, got {epochs}, {steps}, {batch}, "
                         f"{val_every}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but CUDA is not available")
    seed_everything(seed)
    imgsz = imgsz or model.imgsz

    train_set, val_set = _datasets(data, val, imgsz, augment)
    if train_set.nc != model.nc:
        raise UserError(f"the model predicts {model.nc} classes but {train_set.name} has {train_set.nc}; "
                        f"set nc: {train_set.nc} in the architecture")
    train_loader = make_loader(train_set, batch, shuffle=True, workers=workers, seed=seed,
                               drop_last=len(train_set) >= 2 * batch)  # no tiny last batch, unless it is all there is
    val_loader = make_loader(val_set, batch, shuffle=False, workers=workers)
    batches = len(train_loader)
    if steps is not None:
        epochs = epochs_for_steps(steps, batches)
    total = epochs * batches

    model.to(device).train()
    opt, lr = build_optimizer(model, optimizer, lr, momentum, weight_decay * batch / NOMINAL_BATCH,
                              iterations=total)
    warm = warmup_iters if warmup_iters is not None else round(warmup * batches)
    schedule = warmup_cosine(lr, lrf, warm, total)
    criterion = DetectionLoss(model.nc, reg_max=model.reg_max, strides=model.stride.tolist())
    ema = ModelEMA(model, ema_decay, ema_tau)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    params = [p for p in model.parameters() if p.requires_grad]

    history, stopped = [], "completed"
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        sums, seen = {"box": 0.0, "cls": 0.0, "dfl": 0.0}, 0
        for i, (images, targets, _) in enumerate(train_loader):
            step = epoch * batches + i
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            images = images.to(device, non_blocking=True).float().div_(255)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                raw = model(images)
            loss, parts = criterion(raw, targets)
            if not math.isfinite(sum(parts.values())):
                raise NonFiniteLoss(f"loss is {sum(parts.values())} ({_fmt(parts)}) at epoch {epoch + 1}, "
                                    f"iteration {i + 1}/{batches} (step {step + 1}): training diverged; "
                                    "try a lower --lr")
            scaler.scale(loss * len(images)).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(model)

            for k in sums:
                sums[k] += parts[k]
            seen += len(images)
            if on_batch is not None:
                on_batch(epoch, i, batches, {k: v / (i + 1) for k, v in sums.items()})

        train_time = time.perf_counter() - epoch_start
        row = {"epoch": epoch + 1, **{k: v / batches for k, v in sums.items()}}
        row["loss"] = row["box"] + row["cls"] + row["dfl"]
        row.update(lr=schedule(step), time=train_time, images_per_s=seen / train_time)
        out_of_time = time_limit is not None and time.perf_counter() - start >= time_limit
        if (epoch + 1) % val_every == 0 or epoch + 1 == epochs or out_of_time:
            _validate_into(row, ema.module, val_loader, device, amp)
        history.append(row)

        if out_of_time:
            stopped = "time_limit"
        try:
            if callback is not None and callback(epoch, dict(row)) is False:
                stopped = "callback"
        except Stop:
            stopped = "callback"
        if stopped != "completed":
            break

    if "map" not in history[-1]:  # stopped by the callback on an epoch that was not validated
        _validate_into(history[-1], ema.module, val_loader, device, amp)
    validated = [h for h in history if "map" in h]
    final = {k: history[-1][k] for k in ("map", "map50", "map75", "loss", "box", "cls", "dfl")}
    return TrainResult(history=history, final=final, best=max(validated, key=lambda h: h["map"]),
                       epochs_run=len(history), stopped=stopped, time=time.perf_counter() - start,
                       data={"train": train_set.summary(), "val": val_set.summary(),
                             "train_report": train_set.report, "val_report": val_set.report},
                       ema=ema.module)


def batches_per_epoch(images: int, batch: int) -> int:
    """Optimizer steps in one epoch of `images` at `batch`, as `train` loads them (drop_last only
    when at least two full batches remain)."""
    return images // batch if images >= 2 * batch else math.ceil(images / batch)


def epochs_for_steps(steps: int, batches: int) -> int:
    """The whole epochs that give at least `steps` optimizer steps."""
    return max(1, math.ceil(steps / max(1, batches)))


def build_optimizer(model: nn.Module, name: str, lr: float | None, momentum: float, weight_decay: float,
                    iterations: int) -> tuple[torch.optim.Optimizer, float]:
    """SGD or AdamW with two parameter groups: decayed weights, and undecayed 1-D tensors
    (BatchNorm weights and biases, all biases). Returns the optimizer and its base lr."""
    if name == "auto":
        if iterations < AUTO_SGD_ITERATIONS:
            name, momentum = "adamw", 0.9
            lr = lr or round(0.002 * 5 / (4 + model.nc), 6)
        else:
            name = "sgd"
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        lr = lr or 0.01
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True), lr
    if name == "adamw":
        lr = lr or 0.002
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999)), lr
    raise UserError(f"unknown optimizer {name!r}: expected auto, sgd or adamw")


def warmup_cosine(lr: float, lrf: float, warmup: int, total: int) -> Callable[[int], float]:
    """lr at iteration `step` (0-based): linear from lr / warmup up to lr over `warmup` steps, then a
    cosine from lr down to lr * lrf at the last step."""
    def at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(total - 1 - warmup, 1)
        return lr * (lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
    return at


def seed_everything(seed: int) -> None:
    """Python, numpy and torch generators; the loaders get their own seeded generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _datasets(data, val, imgsz: int, augment: bool):
    if isinstance(data, Dataset):
        if val is None:
            raise ValueError("train() with a dataset as `data` needs a `val` dataset too")
        train_set = data
    else:
        train_set = load_dataset(data, "train", imgsz, augment=augment)
    if val is None:
        val = data
    val_set = val if isinstance(val, Dataset) else load_dataset(val, "val", imgsz, augment=False)
    return train_set, val_set


def _validate_into(row: dict, model: nn.Module, loader, device, amp: bool) -> None:
    metrics = evaluate(model, loader, device=str(device), amp=amp)
    row.update(map=metrics["map"], map50=metrics["map50"], map75=metrics["map75"], val_time=metrics["time"])


def _fmt(parts: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in parts.items())
