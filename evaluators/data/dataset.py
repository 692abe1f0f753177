"""`load_dataset` -> a torch Dataset of letterboxed images and targets, plus `collate` and `make_loader`."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nas.errors import UserError

from .coco import load_coco
from .images import decode_fit, fit_shape
from .records import Source, summarize
from .synthetic import load_synthetic
from .transforms import PAD_VALUE, Augment, letterbox
from .yolo import load_yolo


def load_dataset(spec: str | Path, split: str = "train", imgsz: int = 320,
                 augment: bool | Augment = False, cache: bool = True) -> DetectionDataset:
    """Open one split of a detection dataset.

    spec: `synthetic`, `synthetic:n=512,nc=4,seed=0,size=256`, an Ultralytics dataset YAML (or a
    folder holding data.yaml), or a COCO JSON (a single split: `split` is not used).
    imgsz: side of the square letterboxed images. augment: True for the default `Augment()`.
    cache: decode every image now and keep it in memory (resized to fit imgsz), also for later
    datasets in this process; False reads only headers now and decodes on each access.
    Bad images and label rows are skipped and counted in `dataset.report`; a split with no
    usable image, or a missing file, folder or split, raises UserError.
    """
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 8:
        raise UserError(f"image size must be an integer >= 8, got {imgsz!r}")
    text = str(spec)
    path = Path(text).expanduser()
    if text == "synthetic" or text.startswith("synthetic:"):
        source = load_synthetic(text, split, imgsz)
    elif path.is_dir() and (path / "data.yaml").is_file():
        source = load_yolo(path / "data.yaml", split, imgsz, cache)
    elif path.suffix.lower() in (".yaml", ".yml"):
        source = load_yolo(path, split, imgsz, cache)
    elif path.suffix.lower() == ".json":
        source = load_coco(path, imgsz, cache)
    else:
        raise UserError(f"unknown dataset {text!r}: expected 'synthetic[:key=value,...]', "
                        "a dataset YAML, a folder with data.yaml, or a COCO JSON")
    if not source.samples:
        report = summarize(source.name, source.report.as_dict([]))
        first = f" (first: {source.report.examples[0]})" if source.report.examples else ""
        raise UserError(f"no usable image in {report}{first}")
    augment = Augment() if augment is True else (augment or None)
    return DetectionDataset(source, imgsz, augment)


class DetectionDataset(Dataset):
    """Item i: (image uint8 [3, S, S] RGB, targets float32 [N, 5] (cls, x1, y1, x2, y2) letterboxed
    pixels, info {"id", "orig_shape": (h, w), "ratio", "pad": (left, top)}); original pixels =
    (letterboxed - pad) / ratio. With augmentation, info also says "flipped" and ratio/pad include
    the jitter. Random draws come from torch's generator, so torch.manual_seed and DataLoader
    worker seeding make augmentation reproducible.
    """

    def __init__(self, source: Source, imgsz: int, augment: Augment | None = None):
        self.name = source.name
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
        """One line for logs, e.g. 'coco128/data.yaml train: 128 images, 929 boxes, 2 background'."""
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
