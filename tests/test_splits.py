"""Validation data is never the training data by accident: COCO train/val pairs (three ways), the
COCO folder layout, a deterministic held-out split for data without one, `describe_split`, the
`nas train` note, and bad input refused in one line."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from evaluators.data import describe_split, load_dataset, train_image_count
from evaluators.data.holdout import held_out_count
from nas.errors import UserError
from nas.models import save_arch

from .helpers import coco128, tiny_arch

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}]


def write_image(path: Path, size: int = 24, fmt: str = "PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(path, fmt)


def write_coco(json_path: Path, image_dir: Path, names: list[str], categories=CATEGORIES, first_id: int = 1) -> Path:
    """A COCO JSON of one 24 px image per name (written into image_dir), one box each."""
    images, annotations = [], []
    for i, name in enumerate(names, first_id):
        write_image(image_dir / name, fmt="JPEG" if name.endswith(".jpg") else "PNG")
        images.append({"id": i, "file_name": name, "width": 24, "height": 24})
        annotations.append({"id": i, "image_id": i, "category_id": categories[i % len(categories)]["id"],
                            "bbox": [2, 2, 10, 12], "iscrowd": 0})
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def write_yolo(root: Path, names: list[str], folder: str = "images/train") -> None:
    for name in names:
        write_image(root / folder / name)
        label = root / folder.replace("images", "labels") / name
        label.parent.mkdir(parents=True, exist_ok=True)
        label.with_suffix(".txt").write_text("0 0.5 0.5 0.4 0.4\n")


def write_yaml(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def file_names(ds) -> list[str]:
    return sorted(s.path.name for s in ds.samples)


TRAIN = [f"t{i}.png" for i in range(4)]
VAL = ["v0.png", "v1.png"]


# --- train/val pairs ------------------------------------------------------------------------------

def test_pair_of_jsons_given_as_train_comma_val(tmp_path):
    train = write_coco(tmp_path / "train.json", tmp_path, TRAIN)
    val = write_coco(tmp_path / "val.json", tmp_path, VAL)
    spec = f"{train},{val}"
    assert file_names(load_dataset(spec, "train", imgsz=32)) == TRAIN
    val_set = load_dataset(spec, "val", imgsz=32)
    assert file_names(val_set) == VAL and val_set.split_note is None
    assert describe_split(spec) == {"train": str(train), "val": str(val), "held_out": None}
    assert val_set.split == describe_split(spec)


def test_pair_of_jsons_named_by_a_dataset_yaml(tmp_path):
    root = tmp_path / "coco"
    write_coco(root / "ann/train.json", root / "ann", TRAIN)
    write_coco(root / "ann/val.json", root / "ann", VAL)
    data = write_yaml(tmp_path / "cfg/data.yaml", {"path": "../coco", "train": "ann/train.json", "val": "ann/val.json"})
    assert file_names(load_dataset(data, "train", imgsz=32)) == TRAIN
    assert file_names(load_dataset(data, "val", imgsz=32)) == VAL
    assert load_dataset(data, "val", imgsz=32).names == ["car", "train"]  # from the JSON, no `names` needed
    assert describe_split(data) == {"train": str(root / "ann/train.json"), "val": str(root / "ann/val.json"),
                                    "held_out": None}


def test_coco_folder_layout(tmp_path):
    """DIR/annotations/instances_<split>.json, images in DIR/<split>/ (not beside the JSON)."""
    write_coco(tmp_path / "annotations/instances_train2017.json", tmp_path / "train2017", TRAIN)
    write_coco(tmp_path / "annotations/instances_val2017.json", tmp_path / "val2017", VAL)
    train, val = (load_dataset(tmp_path, split, imgsz=32) for split in ("train", "val"))
    assert file_names(train) == TRAIN and {s.path.parent.name for s in train.samples} == {"train2017"}
    assert file_names(val) == VAL and {s.path.parent.name for s in val.samples} == {"val2017"}
    assert train.report["missing_image"] == val.report["missing_image"] == 0
    assert describe_split(tmp_path) == {"train": str(tmp_path / "annotations/instances_train2017.json"),
                                        "val": str(tmp_path / "annotations/instances_val2017.json"),
                                        "held_out": None}
    # a JSON of the layout named on its own finds its images in ../val2017/ too
    alone = load_dataset(tmp_path / "annotations/instances_val2017.json", "train", imgsz=32)
    assert alone.report["missing_image"] == 0 and len(alone) == 1  # 2 images, 1 held out


def test_coco_folder_without_val_json_holds_val_out(tmp_path):
    names = [f"{i}.png" for i in range(10)]
    write_coco(tmp_path / "annotations/instances_train2017.json", tmp_path / "train2017", names)
    d = describe_split(tmp_path)
    assert d["held_out"] == {"fraction": 0.2, "n_val": 2, "n_train": 8, "reason": "no validation split"}
    assert len(load_dataset(tmp_path, "val", imgsz=32)) == 2 and len(load_dataset(tmp_path, "train", imgsz=32)) == 8


# --- held-out split -------------------------------------------------------------------------------

@pytest.mark.parametrize("n,held", [(1, 0), (2, 1), (3, 1), (5, 1), (10, 2), (12, 2), (13, 3), (128, 26)])
def test_held_out_count_is_a_fifth_at_least_one_each_side(n, held):
    assert held_out_count(n) == held


def test_single_json_gets_a_deterministic_disjoint_held_out_split(tmp_path):
    names = [f"img{i:02d}.png" for i in range(10)]
    path = write_coco(tmp_path / "one.json", tmp_path, names)
    train, val = load_dataset(path, "train", imgsz=32), load_dataset(path, "val", imgsz=32)
    assert (len(train), len(val)) == (8, 2)
    assert not set(file_names(train)) & set(file_names(val))
    assert sorted(file_names(train) + file_names(val)) == names
    # the same on any machine: SHA-1 of the file name, not Python's salted hash() or the file order
    assert file_names(val) == ["img04.png", "img06.png"]
    assert val.report["boxes"] == 2 and train.report["boxes"] == 8  # each part keeps its own boxes
    assert "held out for val (20%)" in val.summary() and "less the 20% held out" in train.summary()
    assert val.split_note == ("data has no validation split; validating on a held-out 20% of its training "
                              "images (2 images)")
    assert val.split == train.split == describe_split(path) == {
        "train": str(path), "val": "held out 20% of train (2 of 10 images, by file-name hash)",
        "held_out": {"fraction": 0.2, "n_val": 2, "n_train": 8, "reason": "no validation split"}}

    # shuffled image order and other ids: the same images are held out
    shuffled = json.loads(path.read_text())
    random.Random(1).shuffle(shuffled["images"])
    new_id = {im["id"]: 100 + k for k, im in enumerate(shuffled["images"])}
    for im in shuffled["images"]:
        im["id"] = new_id[im["id"]]
    for ann in shuffled["annotations"]:
        ann["image_id"] = new_id[ann["image_id"]]
    other = tmp_path / "shuffled.json"
    other.write_text(json.dumps(shuffled))
    assert file_names(load_dataset(other, "val", imgsz=32)) == file_names(val)


def test_yaml_without_val_holds_out_part_of_train_stable_under_file_order(tmp_path):
    names = [f"img{i:02d}.png" for i in range(10)]
    write_yolo(tmp_path, names)
    lists = []
    for k, order in enumerate((names, names[::-1])):
        (tmp_path / f"list{k}.txt").write_text("".join(f"images/train/{n}\n" for n in order))
        lists.append(write_yaml(tmp_path / f"d{k}.yaml", {"train": f"list{k}.txt", "names": ["x"]}))
    splits = [(file_names(load_dataset(d, "train", imgsz=32)), file_names(load_dataset(d, "val", imgsz=32)))
              for d in lists]
    assert splits[0] == splits[1]
    train, val = splits[0]
    assert (len(train), len(val)) == (8, 2) and sorted(train + val) == names
    assert val == ["img01.png", "img02.png"]  # ranked by the path relative to the root: images/train/...
    # a broken image stays on its side: the split is made on the list, before decoding
    (tmp_path / "images/train" / train[0]).write_bytes(b"not an image")
    assert file_names(load_dataset(lists[0], "val", imgsz=32)) == val
    assert describe_split(lists[0])["held_out"]["n_train"] == 8
    assert train_image_count(lists[0]) == 8  # what a search's proxy steps are counted against


def test_yaml_whose_val_is_its_train_images_is_held_out(tmp_path):
    names = [f"img{i:02d}.png" for i in range(5)]
    write_yolo(tmp_path, names)
    (tmp_path / "all.txt").write_text("".join(f"./images/train/{n}\n" for n in names[::-1]))
    for val_entry in ("images/train", "./images/train/", "all.txt"):  # same files, however listed
        data = write_yaml(tmp_path / "data.yaml", {"train": "images/train", "val": val_entry, "names": ["x"]})
        train, val = load_dataset(data, "train", imgsz=32), load_dataset(data, "val", imgsz=32)
        assert (len(train), len(val)) == (4, 1) and not set(file_names(train)) & set(file_names(val))
        assert describe_split(data)["held_out"] == {"fraction": 0.2, "n_val": 1, "n_train": 4,
                                                    "reason": "val split is its train images"}
        assert val.split_note.startswith("data's val split is its train images; validating on a held-out 20%")
    # a val that differs by one image is a real val split, used as given
    (tmp_path / "all.txt").write_text("".join(f"images/train/{n}\n" for n in names[1:]))
    data = write_yaml(tmp_path / "data.yaml", {"train": "images/train", "val": "all.txt", "names": ["x"]})
    assert len(load_dataset(data, "val", imgsz=32)) == 4 and describe_split(data)["held_out"] is None


def test_pair_naming_one_json_twice_is_held_out(tmp_path):
    path = write_coco(tmp_path / "a.json", tmp_path, [f"{i}.png" for i in range(5)])
    assert describe_split(f"{path},{path}")["held_out"]["reason"] == "val split is its train images"
    assert len(load_dataset(f"{path},{path}", "val", imgsz=32)) == 1


def test_train_image_count_of_a_yaml_with_val_and_of_synthetic(tmp_path):
    write_yolo(tmp_path, [f"t{i}.png" for i in range(5)])
    write_yolo(tmp_path, [f"v{i}.png" for i in range(3)], folder="images/val")
    d = write_yaml(tmp_path / "d.yaml", {"train": "images/train", "val": "images/val", "names": ["x"]})
    assert train_image_count(d) == 5
    assert train_image_count("synthetic:n=72") == 72 and train_image_count("synthetic") == 256


def test_describe_split_decodes_nothing_and_synthetic_keeps_its_splits(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(10):
        (tmp_path / f"images/{i}.jpg").write_bytes(b"not decodable")
    data = write_yaml(tmp_path / "data.yaml", {"train": "images", "names": ["x"]})
    assert describe_split(data) == {
        "train": f"{data} train", "val": "held out 20% of train (2 of 10 images, by file-name hash)",
        "held_out": {"fraction": 0.2, "n_val": 2, "n_train": 8, "reason": "no validation split"}}
    json.dumps(describe_split(data))  # storable with a study
    spec = "synthetic:n=8,val=4,size=64"
    assert describe_split(spec) == {"train": f"{spec} train", "val": f"{spec} val", "held_out": None}
    assert len(load_dataset(spec, "val", imgsz=64)) == 4 and load_dataset(spec, "val", imgsz=64).split_note is None


def test_coco128_yaml_with_val_equal_to_train_gives_disjoint_splits(tmp_path):
    """Ultralytics' coco128.yaml validates on its training images; here that is held out instead."""
    root = coco128()
    data = write_yaml(tmp_path / "coco128.yaml", {"path": str(root), "train": "images/train2017",
                                                  "val": "images/train2017", "nc": 80})
    train, val = (load_dataset(data, split, imgsz=32, cache=False) for split in ("train", "val"))
    assert (len(train), len(val)) == (102, 26) and len(train) + len(val) == 128
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    assert describe_split(data)["held_out"] == {"fraction": 0.2, "n_val": 26, "n_train": 102,
                                                "reason": "val split is its train images"}
    assert train.report["orphan_label"] == 2 and val.report["orphan_label"] == 0  # reported once


# --- the CLI and bad input ------------------------------------------------------------------------

def test_nas_train_says_when_it_validates_on_held_out_images(tmp_path, nas_main, capsys):
    write_yolo(tmp_path, [f"img{i:02d}.png" for i in range(5)])
    data = write_yaml(tmp_path / "data.yaml", {"train": "images/train", "names": ["x"]})
    arch, out = tmp_path / "tiny.yaml", tmp_path / "run"
    save_arch(tiny_arch(branches=0, nc=1), arch)
    assert nas_main(["train", str(arch), "--data", str(data), "--epochs", "1", "--imgsz", "64", "--batch", "4",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    note = "note: data has no validation split; validating on a held-out 20% of its training images (1 image)"
    assert printed.count(note) == 1, printed
    assert "held out for val (20%): 1 images" in printed and "(less the 20% held out): 4 images" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"] == describe_split(data)
    assert (metrics["dataset"]["train_report"]["images"], metrics["dataset"]["val_report"]["images"]) == (4, 1)

    # nas val scores the same held-out image, and says so (on stderr: stdout is one JSON object)
    assert nas_main(["val", str(out / "arch.yaml"), "--weights", str(out / "weights.pt"), "--data", str(data),
                     "--imgsz", "64", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert note in captured.err and result["images"] == 1 and result["splits"] == metrics["splits"]


def test_bad_data_is_one_clear_line(tmp_path, nas_main, capsys):
    train = write_coco(tmp_path / "train.json", tmp_path, TRAIN)
    other = write_coco(tmp_path / "other.json", tmp_path, VAL, categories=[{"id": 3, "name": "car"}])
    write_yolo(tmp_path, ["a.png"], "images/val")
    (tmp_path / "empty/annotations").mkdir(parents=True)
    mixed = write_yaml(tmp_path / "mixed.yaml", {"train": "train.json", "val": "images/val", "names": ["x"]})
    cases = [(f"{train},{tmp_path / 'gone.json'}", "COCO JSON not found: .*gone.json \\(the val half"),
             (f"{train},{train},{train}", "a pair is two COCO JSON files"),
             (str(tmp_path / "empty"), "needs data.yaml, or annotations/instances_train\\*.json"),
             (f"{train},{other}", "have different categories"),
             (str(mixed), "must both be COCO JSONs or both image folders")]
    for spec, message in cases:
        for split in ("train", "val"):
            with pytest.raises(UserError, match=message):
                load_dataset(spec, split, imgsz=32)
    arch = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(branches=0, nc=2), arch)
    for spec, message in cases:
        assert nas_main(["train", str(arch), "--data", spec, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
