"""`load_dataset` -> a torch Dataset of letterboxed images and targets, plus `collate` and `make_loader`."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nas.errors import UserError

from .coco import load_coco
from .holdout import Holdout
from .images import decode_fit, fit_shape
from .records import Source, summarize
from .splits import Part, SplitPlan, describe, plan_splits, split_note
from .synthetic import load_synthetic
from .transforms import PAD_VALUE, Augment, letterbox
from .yolo import load_yolo


def load_dataset(spec: str | Path, split: str = "train", imgsz: int = 320,
                 augment: bool | Augment = False, cache: bool = True) -> DetectionDataset:
    """Open one split of a detection dataset.

    spec: `synthetic`, `synthetic:n=512,nc=4,seed=0,size=256`, an Ultralytics dataset YAML (or a
    folder holding data.yaml), a folder in the COCO layout, a COCO JSON, or a `train.json,val.json`
    pair (splits.py). Data with no validation split is split: `val` is a deterministic held-out 20%
    of its training images and `train` the rest (holdout.py); `dataset.split_note` then says so.
    imgsz: side of the square letterboxed images. augment: True for the default `Augment()`.
    cache: decode every image now and keep it in memory (resized to fit imgsz), also for later
    datasets in this process; False reads only headers now and decodes on each access.
    Bad images and label rows are skipped and counted in `dataset.report`; a split with no
    usable image, or a missing file, folder or split, raises UserError.
    """
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 8:
        raise UserError(f"image size must be an integer >= 8, got {imgsz!r}")
    plan = plan_splits(spec)
    part, holdout = plan.part(split)
    source = _read(plan, part, imgsz, cache, holdout)
    if not source.samples:
        report = summarize(source.name, source.report.as_dict([]))
        first = f" (first: {source.report.examples[0]})" if source.report.examples else ""
        raise UserError(f"no usable image in {report}{first}")
    augment = Augment() if augment is True else (augment or None)
    return DetectionDataset(source, imgsz, augment, describe(plan, source.held_out))


def _read(plan: SplitPlan, part: Part, imgsz: int, cache: bool, holdout: Holdout | None) -> Source:
    if part.kind == "synthetic":
        return load_synthetic(part.path, part.key, imgsz)
    if part.kind == "coco":
        other = plan.other_half(part)
        source = load_coco(part.path, imgsz, cache, holdout, pair=other.path if other else None)
    else:
        source = load_yolo(part.path, part.key, imgsz, cache, holdout)
    if holdout is not None:
        source.name = holdout.rename(source.name)
    return source


class DetectionDataset(Dataset):
    """Item i: (image uint8 [3, S, S] RGB, targets float32 [N, 5] (cls, x1, y1, x2, y2) letterboxed
    pixels, info {"id", "orig_shape": (h, w), "ratio", "pad": (left, top)}); original pixels =
    (letterboxed - pad) / ratio. With augmentation, info also says "flipped" and ratio/pad include
    the jitter. Random draws come from torch's generator, so torch.manual_seed and DataLoader
    worker seeding make augmentation reproducible.
    """

    def __init__(self, source: Source, imgsz: int, augment: Augment | None = None, split: dict | None = None):
        self.name = source.name
        self.split = split  # splits.describe(): what the data's train and val splits are
        self.split_note = split_note(split) if split else None  # one sentence when val is held out
        self.names = list(source.names)
        self.nc = len(self.names)
        self.category_ids = list(source.category_ids)  # original id of each class index (COCO)
        self.samples = source.samples
        self.imgsz = imgsz
        self.augment = augment
        self.report = source.report.as_dict(self.samples)
        self._images = source.images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        image, boxes, labels = self._image(i), sample.boxes, sample.labels
        if image is None:  # a file that broke after the dataset was built (cache=False): blank, no targets
            _, (h, w) = fit_shape(sample.shape, self.imgsz)
            image, boxes, labels = np.full((h, w, 3), PAD_VALUE, np.uint8), boxes[:0], labels[:0]
        rng = np.random.default_rng(int(torch.randint(2**62, ()))) if self.augment else None
        canvas, boxes, keep, ratio, pad, flipped = letterbox(image, boxes, sample.shape, self.imgsz, rng, self.augment)
        labels = labels[keep].astype(np.float32)[:, None]
        info = {"id": sample.id, "orig_shape": sample.shape, "ratio": ratio, "pad": pad}
        if self.augment:
            info["flipped"] = flipped
        return torch.from_numpy(canvas), torch.from_numpy(np.concatenate([labels, boxes], 1)), info

    def _image(self, i: int) -> np.ndarray | None:
        image = self._images[i]
        if image is not None:
            return image
        try:
            return decode_fit(self.samples[i].path, self.imgsz)
        except (OSError, ValueError) as e:
            warnings.warn(f"{self.samples[i].path}: cannot decode image, using a blank one ({e})", stacklevel=2)
            return None

    def ground_truth(self, i: int) -> dict:
        """Targets of image i in ORIGINAL pixels: {"boxes": float32 [N, 4] xyxy, "labels": int64 [N]}."""
        sample = self.samples[i]
        return {"boxes": sample.boxes.copy(), "labels": sample.labels.copy()}

    def summary(self) -> str:
        """One line for logs, e.g. 'coco128/data.yaml train: 128 images, 929 boxes, 2 background'
        ('coco128/data.yaml train, held out for val (20%): ...' for a held-out split)."""
        return summarize(self.name, self.report)

    def __repr__(self) -> str:
        return f"DetectionDataset({self.summary()}, imgsz={self.imgsz}, augment={self.augment is not None})"


def collate(batch):
    """List of items -> (images uint8 [B, 3, S, S], targets float32 [M, 6] (batch_idx, cls, x1, y1, x2, y2), infos)."""
    images, targets, infos = zip(*batch)
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(targets)]
    return torch.stack(images), torch.cat(rows), list(infos)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, workers: int = 0,
                seed: int | None = None, drop_last: bool = False) -> DataLoader:
    """DataLoader with `collate`; worker processes stay alive between epochs; pinned memory only with CUDA."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      collate_fn=collate, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), drop_last=drop_last, generator=generator)
