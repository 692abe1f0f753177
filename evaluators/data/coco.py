"""COCO JSON: `images`, `annotations` (bbox [x, y, w, h] in pixels), `categories`.

Category ids are arbitrary (COCO's run 1..90 with gaps); they map to contiguous class indices
0..nc-1 in increasing id order, and `category_ids[index]` maps back. Crowd annotations
(`iscrowd: 1`) are not targets. Image files are looked up next to the JSON, then in `images/`,
and for `annotations/instances_<split>.json` (the COCO layout) in `../<split>/` and `../images/<split>/`.
A JSON is one split; with a `Holdout` only one part of its images is loaded (see holdout.py),
images named for it by their `file_name`.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from nas.errors import UserError

from .holdout import Holdout
from .images import open_images
from .records import Report, Sample, Source, clean_boxes


_CATEGORIES: dict[tuple, list[tuple[int, str]]] = {}  # file version -> its categories, see categories()


def load_coco(json_path: Path, imgsz: int, cache: bool, holdout: Holdout | None = None,
              pair: Path | None = None) -> Source:
    """pair: the other half of a train/val pair, whose categories must be the same (checked before decoding)."""
    data = _read_json(json_path)
    if pair is not None and categories(json_path) != categories(pair):
        raise UserError(f"{json_path} and {pair} have different categories: "
                        "the two halves of a train/val pair need the same 'categories' list")
    by_id = sorted(data["categories"], key=lambda c: c["id"])
    category_ids = [int(c["id"]) for c in by_id]
    names = [str(c.get("name", c["id"])) for c in by_id]
    index_of = {cid: i for i, cid in enumerate(category_ids)}

    report = Report()
    # Problems not tied to a kept image go to a report nobody reads in the val part of a held-out split.
    file_report = Report() if holdout is not None and not holdout.owns_file_problems else report
    files = _image_files(data, json_path, file_report)  # image id -> file_name
    kept, held_out = list(files), None
    if holdout is not None:
        kept = [kept[i] for i in holdout.select(list(files.values()), str(json_path))]
        held_out = holdout.counts(list(files.values()))
    folders = image_folders(json_path)
    entries = {image_id: _find_image(folders, files[image_id]) for image_id in kept}  # image id -> path

    rows = defaultdict(list)  # image id -> [(class index or -1, [x, y, w, h])]
    for ann in data.get("annotations") or []:
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id in files and image_id not in entries:
            continue  # an image of the other part
        row = _parse_annotation(ann, entries, index_of)
        if row is None:
            where = report if image_id in entries else file_report
            where.add("bad_row", f"{json_path}: bad annotation {str(ann)[:80]}")
        elif row != "crowd":
            rows[image_id].append(row)

    ids, paths = list(entries), list(entries.values())
    samples, images = [], []
    for i, shape, image in open_images(paths, imgsz, cache, report):
        image_id, path = ids[i], paths[i]
        found = rows.get(image_id, [])
        classes = np.array([c for c, _ in found], dtype=np.float64)
        xywh = np.array([b for _, b in found], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        boxes, labels = clean_boxes(classes, xyxy, shape, len(names), report, f"{json_path} image {image_id}")
        samples.append(Sample(image_id, path, shape, boxes, labels))
        images.append(image)
    return Source(f"{json_path.name}", names, category_ids, samples, images, report, held_out)


def image_names(json_path: Path) -> list[str]:
    """`file_name` of every well-formed image entry, in file order: what a held-out split ranks."""
    return list(_image_files(_read_json(json_path), json_path, Report()).values())


def categories(json_path: Path) -> list[tuple[int, str]]:
    """(id, name) of every category, by id. Remembered per file version, so checking that the halves
    of a pair agree costs no second parse of a JSON this process has read."""
    key = _file_key(json_path)
    if key not in _CATEGORIES:
        _read_json(json_path)
    return _CATEGORIES[key]


def image_folders(json_path: Path) -> list[Path]:
    """Where a JSON's image files may be, in the order they are looked for."""
    folder = json_path.parent
    folders = [folder, folder / "images"]
    if folder.name == "annotations" and json_path.stem.startswith("instances_"):
        split = json_path.stem[len("instances_"):]  # annotations/instances_val2017.json -> val2017
        folders += [folder.parent / split, folder.parent / "images" / split]
    return folders


def _image_files(data: dict, json_path: Path, report: Report) -> dict:
    files = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            report.add("bad_row", f"{json_path}: image entry without id or file_name: {str(entry)[:60]}")
            continue
        files[entry["id"]] = str(entry["file_name"])
    return files


def _file_key(json_path: Path) -> tuple:
    st = json_path.stat()
    return str(json_path.resolve()), st.st_mtime_ns, st.st_size


def _read_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise UserError(f"COCO JSON not found: {json_path}")
    try:
        data = json.loads(json_path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read COCO JSON {json_path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list) or not data["categories"]:
        raise UserError(f"{json_path}: a COCO JSON needs 'images' and non-empty 'categories' lists")
    if not all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in data["categories"]):
        raise UserError(f"{json_path}: every category needs an integer 'id'")
    if len({c["id"] for c in data["categories"]}) != len(data["categories"]):
        raise UserError(f"{json_path}: duplicate category ids")
    _CATEGORIES[_file_key(json_path)] = sorted(
        (c["id"], str(c.get("name", c["id"]))) for c in data["categories"])
    return data


def _find_image(folders: list[Path], file_name: str) -> Path:
    for folder in folders:
        if (folder / file_name).exists():
            return folder / file_name
    return folders[0] / file_name  # reported as missing later


def _parse_annotation(ann, entries: dict, index_of: dict):
    """(class index, [x, y, w, h]), "crowd", or None if malformed. Unknown category -> class -1 (counted as bad class)."""
    if not isinstance(ann, dict) or ann.get("image_id") not in entries:
        return None
    if ann.get("iscrowd"):
        return "crowd"
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        return None
    try:
        bbox = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return None
    if not np.isfinite(bbox).all():
        return None
    return index_of.get(ann.get("category_id"), -1), bbox
