"""Which images a dataset spec trains on and which it validates on, decided without decoding any.

A spec names its two splits in one of these ways:
- `synthetic[:...]`: separate generated train and val streams;
- an Ultralytics data YAML (or a folder with data.yaml) whose `train`/`val` are image folders or
  lists, or COCO JSON files;
- `train.json,val.json`: a COCO pair;
- a folder in the COCO layout: `annotations/instances_train*.json` and `instances_val*.json`;
- one COCO JSON.
Data with no validation split (one JSON, a YAML without `val`, or one whose `val` lists exactly its
train images) is validated on a held-out part of its training images (holdout.py): proxy mAP is
never measured on the images trained on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from nas.errors import UserError

from . import coco, yolo
from .holdout import Holdout

NO_VAL = "no validation split"
VAL_IS_TRAIN = "val split is its train images"


@dataclass(frozen=True)
class Part:
    """Where one split's images come from."""

    kind: str  # "synthetic", "yolo" (images + label files via a YAML) or "coco"
    path: str | Path  # the synthetic spec, the YAML or the JSON
    key: str  # the split's name in the YAML / synthetic spec
    label: str  # for describe_split, e.g. "coco128/data.yaml train"


@dataclass(frozen=True)
class SplitPlan:
    spec: str
    train: Part | None  # None: a YAML with no train split (val may still be loaded)
    val: Part | None  # None: held out of train
    held_out_reason: str | None = None  # NO_VAL or VAL_IS_TRAIN when val is held out

    def part(self, split: str) -> tuple[Part, Holdout | None]:
        """The part to read for `split`, and the Holdout that picks its images (None: all of them)."""
        if split in ("train", "val") and self.held_out_reason:
            return self.train, Holdout(split)
        chosen = {"train": self.train, "val": self.val}.get(split)
        if chosen is not None:
            return chosen, None
        base = self.train or self.val
        if base.kind in ("yolo", "synthetic"):  # other YAML keys (test); the reader names what exists
            return replace(base, key=split, label=f"{base.path} {split}"), None
        raise UserError(f"{self.spec}: COCO data has splits train and val, not '{split}'")

    def other_half(self, part: Part) -> Part | None:
        """The other JSON of a COCO train/val pair (their categories must agree), else None."""
        if self.val is None or self.train is None or not self.train.kind == self.val.kind == "coco":
            return None
        return {self.train: self.val, self.val: self.train}.get(part)


def plan_splits(spec: str | Path) -> SplitPlan:
    """Resolve a dataset spec to its train and val parts; UserError for anything that cannot be one."""
    text = str(spec)
    path = Path(text).expanduser()
    if text == "synthetic" or text.startswith("synthetic:"):
        return SplitPlan(text, Part("synthetic", text, "train", f"{text} train"),
                         Part("synthetic", text, "val", f"{text} val"))
    if "," in text and not path.exists():
        return _pair_plan(text)
    if path.is_dir():
        if (path / "data.yaml").is_file():
            return _yaml_plan(text, path / "data.yaml")
        return _coco_folder_plan(text, path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yaml_plan(text, path)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise UserError(f"COCO JSON not found: {path}")
        return _with_val(text, Part("coco", path, "train", text), None)
    raise UserError(f"unknown dataset {text!r}: expected 'synthetic[:key=value,...]', a dataset YAML, a folder "
                    "with data.yaml or in the COCO layout, a COCO JSON, or a 'train.json,val.json' pair")


def describe(plan: SplitPlan, counts: dict | None = None) -> dict:
    """JSON-serialisable: {"train": str, "val": str, "held_out": None or {"fraction", "n_val", "n_train",
    "reason"}}. counts: a held-out split's Holdout.counts if a reader has them, else they are listed here."""
    train = plan.train.label if plan.train else None
    if not plan.held_out_reason:
        return {"train": train, "val": plan.val.label if plan.val else None, "held_out": None}
    held_out = dict(counts or Holdout("val").counts(_listed_names(plan.train)), reason=plan.held_out_reason)
    n_val, n = held_out["n_val"], held_out["n_val"] + held_out["n_train"]
    val = f"held out {held_out['fraction']:.0%} of train ({n_val} of {n} images, by file-name hash)"
    return {"train": train, "val": val, "held_out": held_out}


def describe_split(spec: str | Path) -> dict:
    """What a spec's train and val splits are, without decoding an image, e.g.
    {"train": "coco/annotations/instances_train2017.json", "val": "coco/annotations/instances_val2017.json",
     "held_out": None} or
    {"train": "coco128/data.yaml train", "val": "held out 20% of train (26 of 128 images, by file-name hash)",
     "held_out": {"fraction": 0.2, "n_val": 26, "n_train": 102, "reason": "no validation split"}}.
    Counts are of images listed (a missing or broken one is still counted). UserError for a bad spec."""
    return describe(plan_splits(spec))


def train_image_count(spec: str | Path) -> int:
    """How many images a spec trains on (listed, none decoded): what turns a proxy budget in optimizer
    steps into epochs. A held-out split's train part is what remains after the hold-out."""
    plan = plan_splits(spec)
    if plan.train is None:
        raise UserError(f"{spec}: no 'train' split to train on")
    if plan.train.kind == "synthetic":
        from .synthetic import parse_spec

        return parse_spec(plan.train.path)["n"]
    if plan.held_out_reason:
        return describe(plan)["held_out"]["n_train"]
    return len(_listed_names(plan.train))


def _listed_names(part: Part) -> list[str]:
    """The names a held-out split ranks, as the readers list them."""
    if part.kind == "coco":
        return coco.image_names(Path(part.path))
    root, paths = yolo.split_paths(Path(part.path), part.key)
    return [yolo.image_key(root, p) for p in paths]


def split_note(description: dict) -> str | None:
    """One sentence for users when val is held out (None otherwise), e.g. 'data has no validation split;
    validating on a held-out 20% of its training images (26 images)'."""
    held_out = description.get("held_out")
    if not held_out:
        return None
    why = "data has no validation split" if held_out["reason"] == NO_VAL else "data's val split is its train images"
    n = held_out["n_val"]
    return (f"{why}; validating on a held-out {held_out['fraction']:.0%} of its training images "
            f"({n} image{'s' * (n != 1)})")


def _with_val(spec: str, train: Part | None, val: Part | None) -> SplitPlan:
    """The plan, val held out when there is none or it is the train data again."""
    if train is None:
        return SplitPlan(spec, None, val)
    if val is None:
        return SplitPlan(spec, train, None, NO_VAL)
    if _same_images(train, val):
        return SplitPlan(spec, train, None, VAL_IS_TRAIN)
    return SplitPlan(spec, train, val)


def _same_images(train: Part, val: Part) -> bool:
    if train.kind == "coco":
        return _normal(train.path) == _normal(val.path)
    try:
        listed = [{_normal(p) for p in yolo.split_paths(Path(part.path), part.key)[1]} for part in (train, val)]
    except UserError:  # a split that cannot be listed is refused when it is loaded, not before
        return False
    return listed[0] == listed[1]


def _normal(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _pair_plan(text: str) -> SplitPlan:
    halves = [h.strip() for h in text.split(",")]
    if len(halves) != 2 or not all(h.lower().endswith(".json") for h in halves):
        raise UserError(f"dataset {text!r}: a pair is two COCO JSON files, 'train.json,val.json'")
    for role, half in zip(("train", "val"), halves):
        if not Path(half).expanduser().is_file():
            raise UserError(f"COCO JSON not found: {half} (the {role} half of {text!r})")
    train, val = (Part("coco", Path(h).expanduser(), key, h) for key, h in zip(("train", "val"), halves))
    return _with_val(text, train, val)


def _coco_folder_plan(text: str, folder: Path) -> SplitPlan:
    """DIR/annotations/instances_train*.json (+ instances_val*.json), images in DIR/train2017/ etc."""
    found = {}
    for key in ("train", "val"):
        matches = sorted((folder / "annotations").glob(f"instances_{key}*.json"))
        if len(matches) > 1:
            raise UserError(f"{folder}/annotations: several {key} JSONs ({', '.join(m.name for m in matches)}); "
                            "name one pair with --data train.json,val.json")
        found[key] = matches[0] if matches else None
    if found["train"] is None:
        raise UserError(f"{folder}: a dataset folder needs data.yaml, or annotations/instances_train*.json "
                        "(and instances_val*.json) in the COCO layout")
    train, val = (Part("coco", p, key, str(p)) if p else None for key, p in found.items())
    return _with_val(text, train, val)


def _yaml_plan(text: str, yaml_path: Path) -> SplitPlan:
    cfg = yolo.read_yaml(yaml_path)
    root = yolo.dataset_root(cfg, yaml_path)
    train, val = (_yaml_part(yaml_path, cfg, root, key) for key in ("train", "val"))
    if train is None and val is None:
        raise UserError(f"{yaml_path}: no 'train' or 'val' split")
    if train and val and train.kind != val.kind:
        raise UserError(f"{yaml_path}: 'train' and 'val' must both be COCO JSONs or both image folders/lists")
    return _with_val(text, train, val)


def _yaml_part(yaml_path: Path, cfg: dict, root: Path, key: str) -> Part | None:
    entry = cfg.get(key)
    if entry in (None, "", []):
        return None
    if isinstance(entry, (str, Path)) and str(entry).lower().endswith(".json"):
        json_path = yolo.under(root, entry)
        if not json_path.is_file():
            raise UserError(f"{yaml_path}: '{key}' COCO JSON not found: {json_path}")
        return Part("coco", json_path, key, str(json_path))
    return Part("yolo", yaml_path, key, f"{yaml_path} {key}")
