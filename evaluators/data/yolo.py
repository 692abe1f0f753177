"""Ultralytics dataset YAML: image folders or lists, one `cls cx cy w h` label file per image.

Paths: `path` is the dataset root. Relative -> resolved against the YAML's own folder; absent ->
the YAML's folder; absolute but missing (a YAML written on another machine) -> the YAML's folder,
with a log message. `train` / `val` entries (a folder, a .txt list of image paths, an image, or a
list of those) are relative to the root. Lines of a .txt list are relative to the root too.
With a `Holdout`, only one part of the split's images is loaded (see holdout.py); images are
named for it by their path relative to the root.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import yaml

from nas.errors import UserError

from .holdout import Holdout
from .images import IMAGE_SUFFIXES, open_images
from .records import Report, Sample, Source, clean_boxes

log = logging.getLogger(__name__)


def label_path(image: Path) -> Path:
    """images/a/b.jpg -> labels/a/b.txt: the LAST /images/ becomes /labels/, the extension .txt."""
    s, images, labels = str(image), f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if images in s:
        head, tail = s.rsplit(images, 1)
        s = head + labels + tail
    return Path(s).with_suffix(".txt")


def load_yolo(yaml_path: Path, split: str, imgsz: int, cache: bool, holdout: Holdout | None = None) -> Source:
    cfg = read_yaml(yaml_path)
    names = parse_names(cfg, yaml_path)
    root = dataset_root(cfg, yaml_path)
    listed = _split_paths(cfg, root, split, yaml_path)
    paths, held_out = listed, None
    if holdout is not None:
        keys = [image_key(root, p) for p in listed]
        paths = [listed[i] for i in holdout.select(keys, f"{yaml_path} {split}")]
        held_out = holdout.counts(keys)

    report = Report()
    samples, images = [], []
    for i, shape, image in open_images(paths, imgsz, cache, report):
        path = paths[i]
        boxes, labels = read_labels(label_path(path), shape, len(names), report)
        samples.append(Sample(len(samples), path, shape, boxes, labels))
        images.append(image)
    if holdout is None or holdout.owns_file_problems:
        report_orphan_labels(root, cfg[split], listed, report)  # every listed image uses its label file
    name = f"{yaml_path.parent.name}/{yaml_path.name} {split}"
    return Source(name, names, list(range(len(names))), samples, images, report, held_out)


def split_paths(yaml_path: Path, split: str) -> tuple[Path, list[Path]]:
    """(dataset root, image paths of one split), listed from the YAML without opening an image."""
    cfg = read_yaml(yaml_path)
    root = dataset_root(cfg, yaml_path)
    return root, _split_paths(cfg, root, split, yaml_path)


def image_key(root: Path, path: Path) -> str:
    """An image's name for the held-out split: its path relative to the root, the same on any machine."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # listed from outside the root
        return path.name


def _split_paths(cfg: dict, root: Path, split: str, yaml_path: Path) -> list[Path]:
    if cfg.get(split) in (None, "", []):
        splits = ", ".join(k for k in ("train", "val", "test") if cfg.get(k))
        raise UserError(f"{yaml_path}: no '{split}' split (it has: {splits or 'none'})")
    return split_images(root, cfg[split], split, yaml_path)


def read_yaml(yaml_path: Path) -> dict:
    if not yaml_path.is_file():
        raise UserError(f"dataset YAML not found: {yaml_path}")
    try:
        cfg = yaml.safe_load(yaml_path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read dataset YAML {yaml_path}: {e}".splitlines()[0]) from None
    if not isinstance(cfg, dict):
        raise UserError(f"{yaml_path}: a dataset YAML must be a mapping with train, val and names")
    return cfg


def parse_names(cfg: dict, where: Path) -> list[str]:
    """`names` as a list or {id: name} (ids 0..n-1), or just `nc` (names '0', '1', ...)."""
    names, nc = cfg.get("names"), cfg.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        raise UserError(f"{where}: 'nc' must be a positive integer, got {nc!r}")
    if names is None:
        if nc is None:
            raise UserError(f"{where}: needs 'names' (list or dict) or 'nc'")
        return [str(i) for i in range(nc)]
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise UserError(f"{where}: 'names' keys must be class ids 0..n-1") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise UserError(f"{where}: 'names' keys must be class ids 0..{len(by_id) - 1}, got {sorted(by_id)}")
        names = [by_id[i] for i in range(len(by_id))]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise UserError(f"{where}: 'names' must be a list or a mapping {{id: name}}")
    if not names:
        raise UserError(f"{where}: 'names' is empty")
    if nc is not None and nc != len(names):
        raise UserError(f"{where}: 'nc' is {nc} but 'names' has {len(names)} entries")
    return names


def dataset_root(cfg: dict, yaml_path: Path) -> Path:
    folder = yaml_path.resolve().parent
    path = cfg.get("path")
    if path in (None, ""):
        return folder
    root = Path(str(path)).expanduser()
    if not root.is_absolute():
        return (folder / root).resolve()
    if not root.exists():
        log.info("%s: path %s does not exist here; using the YAML's folder %s", yaml_path, root, folder)
        return folder
    return root


def split_images(root: Path, entries, split: str, where: Path) -> list[Path]:
    """Image paths of a split entry: folder (searched recursively), .txt list, image, or a list of those."""
    entries = entries if isinstance(entries, list) else [entries]
    images: list[Path] = []
    for entry in entries:
        if not isinstance(entry, (str, Path)):
            raise UserError(f"{where}: '{split}' entries must be paths, got {entry!r}")
        p = under(root, entry)
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix.lower() == ".txt":
            lines = (line.strip() for line in p.read_text().splitlines())
            images += [under(root, line) for line in lines if line and not line.startswith("#")]
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        elif not p.exists():
            raise UserError(f"{where}: '{split}' path does not exist: {p}")
        else:
            raise UserError(f"{where}: '{split}' entry {p} is not a folder, a .txt list or an image")
    return images


def report_orphan_labels(root: Path, entries, images: list[Path], report: Report) -> None:
    """Label files in a split folder's labels/ twin that no image uses: their boxes cannot load.
    Counted (with their rows) so the report accounts for every label row on disk."""
    used = {label_path(p).resolve() for p in images}
    for entry in entries if isinstance(entries, list) else [entries]:
        folder = under(root, entry)
        labels = label_path(folder / "x").parent  # images/<split> -> labels/<split>
        if not folder.is_dir() or labels == folder or not labels.is_dir():
            continue
        for txt in sorted(labels.rglob("*.txt")):
            if txt.resolve() not in used:
                rows = sum(1 for line in txt.read_text(errors="replace").splitlines() if line.strip())
                report.add("orphan_label", f"{txt}: no image for this label file ({rows} boxes not loaded)")


def under(root: Path, entry) -> Path:
    """A split entry as a path: absolute as is, relative under the root."""
    p = Path(str(entry)).expanduser()
    return p if p.is_absolute() else root / p


def read_labels(path: Path, shape: tuple[int, int], nc: int, report: Report):
    """Boxes (xyxy pixels) and labels of one label file; missing or empty -> background image."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        report.add("bad_row", f"{path}: unreadable label file ({e})")
        text = ""
    classes, boxes = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        box = _parse_row(line)
        if box is None:
            report.add("bad_row", f"{path}:{lineno}: expected 'cls cx cy w h' or 'cls x1 y1 x2 y2 ...', got {line.strip()[:60]!r}")
            continue
        classes.append(box[0])
        boxes.append(box[1:])
    h, w = shape
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4) * (w, h, w, h)
    return clean_boxes(np.array(classes), boxes, shape, nc, report, str(path))


def _parse_row(line: str) -> list[float] | None:
    """[cls, x1, y1, x2, y2] normalised, from a box row or a polygon row; None if malformed."""
    try:
        values = [float(f) for f in line.split()]
    except ValueError:
        return None
    coords = values[1:]
    if not np.isfinite(values).all():
        return None
    if len(coords) == 4:
        cx, cy, w, h = coords
        return [values[0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if len(coords) >= 6 and len(coords) % 2 == 0:  # polygon x1 y1 x2 y2 ... -> its bounding box
        xs, ys = coords[0::2], coords[1::2]
        return [values[0], min(xs), min(ys), max(xs), max(ys)]
    return None
