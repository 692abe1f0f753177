"""COCO JSON: `images`, `annotations` (bbox [x, y, w, h] in pixels), `categories`.

Category ids are arbitrary (COCO's run 1..90 with gaps); they map to contiguous class indices
0..nc-1 in increasing id order, and `category_ids[index]` maps back. Crowd annotations
(`iscrowd: 1`) are not targets. Image files are looked up next to the JSON, then in `images/`.
A COCO JSON holds a single split, so the split name is not used.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from nas.errors import UserError

from .images import open_images
from .records import Report, Sample, Source, clean_boxes


def load_coco(json_path: Path, imgsz: int, cache: bool) -> Source:
    data = _read_json(json_path)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    category_ids = [int(c["id"]) for c in categories]
    names = [str(c.get("name", c["id"])) for c in categories]
    index_of = {cid: i for i, cid in enumerate(category_ids)}

    report = Report()
    entries = {}  # image id -> (path, JSON entry)
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            report.add("bad_row", f"{json_path}: image entry without id or file_name: {str(entry)[:60]}")
            continue
        entries[entry["id"]] = _find_image(json_path.parent, entry["file_name"])

    rows = defaultdict(list)  # image id -> [(class index or -1, [x, y, w, h])]
    for ann in data.get("annotations") or []:
        row = _parse_annotation(ann, entries, index_of)
        if row is None:
            report.add("bad_row", f"{json_path}: bad annotation {str(ann)[:80]}")
        elif row != "crowd":
            rows[ann["image_id"]].append(row)

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
    return Source(f"{json_path.name}", names, category_ids, samples, images, report)


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
    return data


def _find_image(folder: Path, file_name: str) -> Path:
    for candidate in (folder / file_name, folder / "images" / file_name):
        if candidate.exists():
            return candidate
    return folder / file_name  # reported as missing later


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
