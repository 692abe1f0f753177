"""evaluators.data: every source format, bad data counted not fatal, geometry, augmentation, batching."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from evaluators.data import Augment, collate, load_dataset, make_loader
from evaluators.data.synthetic import generate
from nas.errors import UserError

from .helpers import coco128

RED = (220, 20, 20)


def write_image(path: Path, w: int, h: int, rects=(), background=(40, 90, 40), fmt="PNG"):
    """A plain image with solid red rectangles at the given xyxy pixel boxes."""
    a = np.empty((h, w, 3), np.uint8)
    a[:] = background
    for x1, y1, x2, y2 in rects:
        a[y1:y2, x1:x2] = RED
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, fmt)


def write_labels(path: Path, rows: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def val_folder(root: Path) -> str:
    """A separate one-image val folder, so the train split is loaded whole (no held-out part)."""
    write_image(root / "valset/v.png", 16, 16)
    return "valset"


def red_box(image: torch.Tensor) -> np.ndarray:
    """xyxy pixel-edge box around the red pixels of a [3, H, W] uint8 image."""
    r, g, b = image.numpy().astype(int)
    ys, xs = np.nonzero((r > 150) & (g < 80) & (b < 80))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


# --- Ultralytics YAML -----------------------------------------------------------------------------

def test_yolo_folder_with_bad_rows_polygons_and_broken_images(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "images/train/a.png", 100, 50)
    write_labels(root / "labels/train/a.txt", [
        "0 0.5 0.5 0.2 0.4",                        # box: x 40..60, y 15..35
        "2 0.1 0.2 0.3 0.2 0.2 0.8",                # polygon -> its box x 10..30, y 10..40
        "1 0.95 0.5 0.11 0.2",                      # sticks out by 0.005: clipped to x 89.5..100, kept
    ])
    write_image(root / "images/train/b.png", 64, 64)  # no label file: background
    write_image(root / "images/train/c.png", 64, 64)
    write_labels(root / "labels/train/c.txt", [
        "1 0.5 0.5",                                 # too few fields
        "x 0.5 0.5 0.1 0.1",                         # not a number
        "0 0.1 0.1 0.2 0.2 0.3",                     # polygon with an odd number of coordinates
        "3 0.5 0.5 0.1 0.1",                         # class >= nc
        "-1 0.5 0.5 0.1 0.1",                        # negative class
        "0 1.5 0.5 0.2 0.2",                         # outside the image
        "0 0.5 0.5 0 0.1",                           # zero width
        "",                                          # blank lines are fine
        "2 0.25 0.25 0.5 0.5",                       # the one good row
    ])
    write_labels(root / "labels/train/d.txt", ["0 0.5 0.5 0.1 0.1"])
    (root / "images/train/d.png").write_bytes(b"definitely not a png")  # undecodable
    data = write_yaml(root / "data.yaml", {"path": ".", "train": "images/train", "val": val_folder(root),
                                           "names": {0: "cat", 1: "dog", 2: "bird"}})

    ds = load_dataset(data, "train", imgsz=64)
    assert ds.names == ["cat", "dog", "bird"] and ds.nc == 3 and len(ds) == 3
    r = ds.report
    assert (r["images"], r["boxes"], r["background"]) == (3, 4, 1)
    assert (r["bad_image"], r["bad_row"], r["bad_class"], r["out_of_range"], r["degenerate_box"], r["missing_image"]) \
        == (1, 3, 2, 1, 1, 0)
    assert any("d.png" in m for m in r["examples"])
    assert "3 images, 4 boxes, 1 background; skipped 1 undecodable image, 3 bad label row" in ds.summary()

    gt = ds.ground_truth(0)
    np.testing.assert_allclose(gt["boxes"], [[40, 15, 60, 35], [10, 10, 30, 40], [89.5, 20, 100, 30]], atol=1e-4)
    np.testing.assert_array_equal(gt["labels"], [0, 2, 1])
    assert len(ds.ground_truth(1)["labels"]) == 0
    np.testing.assert_allclose(ds.ground_truth(2)["boxes"], [[0, 0, 32, 32]], atol=1e-4)


def test_yolo_txt_list_list_of_folders_nc_only_and_relative_path(tmp_path):
    root = tmp_path / "images" / "ds"  # an /images/ above the dataset: only the LAST one becomes /labels/
    for name in ("p", "q"):
        write_image(root / f"images/{name}/{name}.jpg", 32, 48, fmt="JPEG")
        write_labels(root / f"labels/{name}/{name}.txt", ["1 0.5 0.5 0.5 0.5"])
    (root / "val.txt").write_text("images/p/p.jpg\n./images/q/q.jpg\nimages/gone.jpg\n")
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    data = write_yaml(cfg_dir / "d.yaml", {"path": "../images/ds", "nc": 2,
                                           "train": ["images/p", "images/q"], "val": "val.txt"})

    train = load_dataset(data, "train", imgsz=32, cache=False)
    assert train.names == ["0", "1"] and len(train) == 2 and train.report["boxes"] == 2
    val = load_dataset(data, "val", imgsz=32)
    assert len(val) == 2 and val.report["missing_image"] == 1
    assert "1 missing image" in val.summary()
    np.testing.assert_allclose(val.ground_truth(0)["boxes"], [[8, 12, 24, 36]], atol=1e-4)
    # cached and lazily decoded items are the same
    assert torch.equal(train[0][0], load_dataset(data, "train", imgsz=32, cache=True)[0][0])


def test_yolo_user_errors_and_absolute_path_fallback(tmp_path):
    write_image(tmp_path / "images/a.png", 16, 16)
    ok = write_yaml(tmp_path / "ok.yaml", {"path": "/nowhere/at/all", "train": "images", "names": ["x"]})
    assert len(load_dataset(ok, "train", imgsz=16)) == 1  # absolute path missing here: the YAML's folder

    with pytest.raises(UserError, match="not found"):
        load_dataset(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="1 image.*too few to hold out a validation split"):
        load_dataset(ok, "val")  # no val, and one image: nothing can be held out
    with pytest.raises(UserError, match="no 'test' split"):
        load_dataset(ok, "test")
    gone = write_yaml(tmp_path / "gone.yaml", {"train": "images/nope", "names": ["x"]})
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(gone)
    with pytest.raises(UserError, match="'nc' is 2"):
        load_dataset(write_yaml(tmp_path / "nc.yaml", {"train": "images", "names": ["x"], "nc": 2}))
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("no-such-thing")


def test_split_without_a_usable_image_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images/a.jpg").write_bytes(b"\xff\xd8 broken")
    (tmp_path / "images/b.png").write_bytes(b"")
    data = write_yaml(tmp_path / "data.yaml", {"train": "images", "val": val_folder(tmp_path), "names": ["x"]})
    with pytest.raises(UserError, match="no usable image.*2 undecodable image"):
        load_dataset(data)


def test_truncated_jpeg_is_skipped_when_cached_and_blank_when_lazy(tmp_path):
    write_image(tmp_path / "images/full.jpg", 64, 48, [(8, 8, 40, 40)], fmt="JPEG")
    write_labels(tmp_path / "labels/full.txt", ["0 0.375 0.5 0.5 0.666"])
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.jpg")  # noise: the compressed data dwarfs the header
    whole = (tmp_path / "noise.jpg").read_bytes()
    (tmp_path / "images/cut.jpg").write_bytes(whole[:len(whole) * 2 // 3])  # header fine, data cut off
    write_labels(tmp_path / "labels/cut.txt", ["0 0.5 0.5 0.5 0.5"])
    data = write_yaml(tmp_path / "data.yaml", {"train": "images", "val": val_folder(tmp_path), "names": ["x"]})

    cached = load_dataset(data, imgsz=32)
    assert len(cached) == 1 and cached.report["bad_image"] == 1 and cached.samples[0].path.name == "full.jpg"

    lazy = load_dataset(data, imgsz=32, cache=False)  # only headers are read up front
    assert len(lazy) == 2
    with pytest.warns(UserWarning, match="cannot decode"):
        image, targets, _ = lazy[[s.path.name for s in lazy.samples].index("cut.jpg")]
    assert (image == 114).all() and len(targets) == 0


# --- COCO JSON ------------------------------------------------------------------------------------

def test_coco_json_category_mapping_iscrowd_and_bad_annotations(tmp_path):
    write_image(tmp_path / "images/one.png", 80, 40)
    write_image(tmp_path / "two.png", 40, 40)
    coco = {
        "images": [{"id": 11, "file_name": "one.png", "width": 80, "height": 40},
                   {"id": 12, "file_name": "two.png", "width": 40, "height": 40},
                   {"id": 13, "file_name": "absent.png", "width": 40, "height": 40}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 90, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [0, 0, 80, 40], "iscrowd": 1},  # crowd: no target
            {"id": 3, "image_id": 12, "category_id": 7, "bbox": [1, 2, 3, 4]},
            {"id": 4, "image_id": 12, "category_id": 3, "bbox": [30, 30, 10, 10]},
            {"id": 5, "image_id": 12, "category_id": 5, "bbox": [1, 1, 5, 5]},  # unknown category
            {"id": 6, "image_id": 12, "category_id": 3, "bbox": [1, 1, 5]},     # malformed bbox
            {"id": 7, "image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5]},  # unknown image
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    val_json = tmp_path / "val.json"  # a pair, so the train JSON is loaded whole (no held-out part)
    val_json.write_text(json.dumps({**coco, "images": coco["images"][1:2], "annotations": []}))

    ds = load_dataset(f"{path},{val_json}", imgsz=32)
    assert ds.names == ["car", "train", "toothbrush"] and ds.category_ids == [3, 7, 90]
    assert len(ds) == 2 and [s.id for s in ds.samples] == [11, 12]
    assert (ds.report["missing_image"], ds.report["bad_class"], ds.report["bad_row"]) == (1, 1, 2)

    kept = [a for a in coco["annotations"] if a["id"] in (1, 3, 4)]
    found = [(ds.samples[i].id, ds.category_ids[label], tuple(box))
             for i in range(len(ds)) for box, label in zip(*ds.ground_truth(i).values())]
    expected = [(a["image_id"], a["category_id"], (a["bbox"][0], a["bbox"][1],
                 a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])) for a in kept]
    assert sorted(found) == sorted(expected)

    with pytest.raises(UserError, match="COCO JSON not found"):
        load_dataset(tmp_path / "nope.json")


# --- synthetic ------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_multiclass_and_varied():
    spec = "synthetic:n=24,val=8,nc=4,seed=3,size=96"
    a = load_dataset(spec, "train", imgsz=96)
    generate.cache_clear()  # really generate again
    b = load_dataset(spec, "train", imgsz=96)
    assert len(a) == 24 and a.nc == 4
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])

    other = load_dataset(spec.replace("seed=3", "seed=4"), "train", imgsz=96)
    val = load_dataset(spec, "val", imgsz=96)
    assert len(val) == 8
    assert not torch.equal(a[0][0], other[0][0]) and not torch.equal(a[0][0], val[0][0])

    gts = [a.ground_truth(i) for i in range(len(a))]
    labels = np.concatenate([g["labels"] for g in gts])
    boxes = np.concatenate([g["boxes"] for g in gts])
    wh = boxes[:, 2:] - boxes[:, :2]
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert np.sqrt(wh.prod(1)).max() / np.sqrt(wh.prod(1)).min() > 4  # varied scale
    assert (wh[:, 0] / wh[:, 1]).max() > 1.5 and (wh[:, 0] / wh[:, 1]).min() < 1 / 1.5  # varied aspect
    assert ((boxes >= 0) & (boxes <= 96)).all()


def test_synthetic_spec_errors_name_the_key():
    with pytest.raises(UserError, match="unknown key 'colour'"):
        load_dataset("synthetic:colour=3")
    with pytest.raises(UserError, match="'n' must be an integer"):
        load_dataset("synthetic:n=many")
    with pytest.raises(UserError, match="'nc' must be an integer"):
        load_dataset("synthetic:nc=0")
    with pytest.raises(UserError, match="splits train, val"):
        load_dataset("synthetic:n=4", "test")


# --- geometry and augmentation --------------------------------------------------------------------

@pytest.mark.parametrize("w,h,rect", [(200, 100, (30, 20, 90, 70)), (60, 150, (5, 100, 55, 140))])
def test_letterbox_geometry_maps_back_to_original_pixels(tmp_path, w, h, rect):
    write_image(tmp_path / "images/a.png", w, h, [rect])
    x1, y1, x2, y2 = rect
    write_labels(tmp_path / "labels/a.txt", [f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"])
    ds = load_dataset(write_yaml(tmp_path / "d.yaml", {"train": "images", "names": ["r"]}), imgsz=64)
    image, targets, info = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8 and targets.dtype == torch.float32
    ratio, (left, top) = info["ratio"], info["pad"]
    assert info["orig_shape"] == (h, w) and ratio == pytest.approx(64 / max(w, h))
    assert (left, top) == ((64 - round(w * ratio)) // 2, (64 - round(h * ratio)) // 2)
    # pad is grey 114, centred; the red rectangle sits where the target says
    assert (image[:, :top] == 114).all() and (image[:, :, :left] == 114).all()
    np.testing.assert_allclose(red_box(image), targets[0, 1:].numpy(), atol=1.0)
    back = (targets[:, 1:].numpy() - np.array([left, top, left, top])) / ratio
    np.testing.assert_allclose(back, ds.ground_truth(0)["boxes"], atol=1e-3)


def test_augmentation_keeps_boxes_on_their_objects_and_inside(tmp_path):
    for i, rect in enumerate([(10, 10, 40, 30), (70, 5, 100, 60), (0, 30, 25, 60)]):
        write_image(tmp_path / f"images/{i}.png", 100, 60, [rect])
        x1, y1, x2, y2 = rect
        write_labels(tmp_path / f"labels/{i}.txt", [f"0 {(x1 + x2) / 200} {(y1 + y2) / 120} {(x2 - x1) / 100} {(y2 - y1) / 60}"])
    data = write_yaml(tmp_path / "d.yaml", {"train": "images", "val": val_folder(tmp_path), "names": ["r"]})
    ds = load_dataset(data, imgsz=64, augment=Augment(scale=0.5, translate=0.3, hsv=(0, 0, 0)))
    assert len(ds) == 3
    torch.manual_seed(0)
    seen_flip = 0
    for _ in range(12):
        for i in range(len(ds)):
            image, targets, info = ds[i]
            boxes = targets[:, 1:].numpy()
            assert ((boxes >= 0) & (boxes <= 64)).all()
            seen_flip += info["flipped"]
            if len(boxes) == 0:  # zoomed or shifted out of view: dropped
                continue
            np.testing.assert_allclose(red_box(image), boxes[0], atol=1.5)
    assert seen_flip > 0 and seen_flip < 36

    # A flip alone gives exactly the mirrored letterbox (pads here are even, so the mirror is exact).
    plain = load_dataset(data, imgsz=64)
    flip = load_dataset(data, imgsz=64, augment=Augment(flip=1.0, scale=0, translate=0, hsv=(0, 0, 0)))
    for i in range(len(plain)):
        (im0, t0, _), (im1, t1, info) = plain[i], flip[i]
        assert info["flipped"] and torch.equal(im1, im0.flip(-1))
        np.testing.assert_allclose(t1[:, [1, 3]].numpy(), 64 - t0[:, [3, 1]].numpy(), atol=1e-4)
        np.testing.assert_allclose(t1[:, [2, 4]].numpy(), t0[:, [2, 4]].numpy(), atol=1e-4)

    # HSV jitter changes colours, not geometry
    hsv = load_dataset(data, imgsz=64, augment=Augment(flip=0, scale=0, translate=0, hsv=(0.1, 0.7, 0.4)))
    im2, t2, _ = hsv[0]
    assert not torch.equal(im2, plain[0][0]) and torch.equal(t2, plain[0][1])


def test_collate_and_loader():
    ds = load_dataset("synthetic:n=6,val=2,size=64", imgsz=64)
    images, targets, infos = collate([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    counts = [len(ds[i][1]) for i in range(3)]
    assert targets.shape == (sum(counts), 6) and len(infos) == 3
    assert torch.equal(targets[:, 0], torch.repeat_interleave(torch.arange(3.0), torch.tensor(counts)))
    assert torch.equal(targets[:, 1:], torch.cat([ds[i][1] for i in range(3)]))

    loader = make_loader(ds, batch_size=4, shuffle=True, workers=1, seed=0)
    assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 2]
    assert sum(len(b[1]) for b in batches) == ds.report["boxes"]
    assert {i["id"] for b in batches for i in b[2]} == set(range(6))

    # augmentation in worker processes is reproducible from the loader seed
    augmented = load_dataset("synthetic:n=6,val=2,size=64", imgsz=64, augment=True)
    runs = [list(make_loader(augmented, batch_size=3, shuffle=True, workers=1, seed=7)) for _ in range(2)]
    for (im0, t0, _), (im1, t1, _) in zip(*runs):
        assert torch.equal(im0, im1) and torch.equal(t0, t1)


# --- the real set ---------------------------------------------------------------------------------

def test_coco128_counts():
    """coco128's README says 941 train boxes: that counts the rows of all label files, but two of
    them (000000000656, 000000000659, 12 rows) have no image here and two images (000000000250,
    000000000508) have no label file. What loads is 128 images, 929 boxes, 2 backgrounds (Ultralytics
    reports the same), and the report names the 2 orphan label files, so 929 + 12 = 941 rows."""
    root = coco128()
    for split, boxes, background in (("train", 929, 2), ("val", 898, 0)):
        ds = load_dataset(root / "data.yaml", split, imgsz=160)
        assert (len(ds), ds.report["boxes"], ds.report["background"]) == (128, boxes, background)
        assert ds.nc == 80 and ds.names[0] == "person"
        orphans = [m for m in ds.report["examples"] if "no image for this label file" in m]
        assert ds.report["orphan_label"] == len(orphans) == (2 if split == "train" else 0)
        orphan_rows = sum(int(m.rsplit("(", 1)[1].split()[0]) for m in orphans)
        assert boxes + orphan_rows == {"train": 941, "val": 898}[split]  # the README's counts
        assert sum(len(ds.ground_truth(i)["labels"]) for i in range(len(ds))) == boxes
        # the same count straight from the files (5 numbers a row), for images that exist
        rows = sum(len((root / f"labels/{split}2017/{p.stem}.txt").read_text().split())
                   for p in (root / f"images/{split}2017").glob("*.jpg")
                   if (root / f"labels/{split}2017/{p.stem}.txt").exists())
        assert rows == boxes * 5
    image, targets, info = ds[0]
    assert image.shape == (3, 160, 160) and len(targets) == len(ds.ground_truth(0)["labels"])
