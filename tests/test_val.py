"""Validation: boxes go back to original pixels before scoring, `nas val` reproduces the mAP that
`nas train` recorded, and bad weight files are refused with one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from evaluators.data import load_dataset, make_loader
from evaluators.validate import evaluate
from nas.models import pan_neck, save_arch, stage_backbone


def tiny_arch(nc: int = 2, imgsz: int = 64, neck: int = 32) -> dict:
    def stage(width, stride):
        return dict(width=width, depth=1, expansion=3, kernel=3, stride=stride, se=0, ratio=2, dfc=0,
                    branches=0, scale=False)
    rows, taps = stage_backbone(16, [stage(16, 2), stage(24, 2), stage(32, 2), stage(48, 2)], 64)
    return {"nc": nc, "imgsz": imgsz, "backbone": rows,
            "head": pan_neck(taps, len(rows), (neck, neck, 48), 1, 32)}


class Oracle(nn.Module):
    """Predicts each image's letterboxed ground truth (in loader order), plus a low-score decoy.
    Scored in original pixels, that is a perfect detector only if evaluate() undoes the letterbox."""

    def __init__(self, dataset, nc: int, shift: float = 0.0):
        super().__init__()
        self.boxes = [dataset[i][1] for i in range(len(dataset))]  # [N, 5] (cls, xyxy) letterboxed
        self.nc, self.imgsz, self.shift, self.cursor = nc, dataset.imgsz, shift, 0

    def forward(self, x):
        return [x]

    def decode(self, raw):
        batch = self.boxes[self.cursor:self.cursor + len(raw[0])]
        self.cursor += len(batch)
        width = max(len(t) for t in batch) + 1
        boxes, scores = torch.zeros(len(batch), width, 4), torch.zeros(len(batch), width, self.nc)
        for i, t in enumerate(batch):
            boxes[i, :len(t)] = t[:, 1:] + self.shift
            scores[i, torch.arange(len(t)), t[:, 0].long()] = 0.9
            boxes[i, -1], scores[i, -1, 0] = torch.tensor([0.0, 0.0, 5.0, 5.0]), 0.01  # a wrong, unsure box
        return boxes, scores


@pytest.fixture
def odd_shapes(tmp_path):
    """An Ultralytics dataset of two non-square images, so letterboxing both scales and pads."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name, (w, h), rows in [("wide", (200, 120), ["0 0.5 0.5 0.4 0.5", "1 0.2 0.3 0.2 0.3"]),
                               ("tall", (90, 160), ["1 0.5 0.6 0.6 0.3"])]:
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / "images" / f"{name}.png")
        (tmp_path / "labels" / f"{name}.txt").write_text("\n".join(rows) + "\n")
    (tmp_path / "data.yaml").write_text("path: .\nval: images\nnames: [a, b]\n")
    return tmp_path / "data.yaml"


def test_boxes_are_scored_in_original_pixels(odd_shapes):
    dataset = load_dataset(odd_shapes, "val", 64)
    assert evaluate(Oracle(dataset, 2), dataset, batch=1)["map"] == pytest.approx(1.0)
    # Four letterboxed pixels off is 6-7 original pixels on these images: most IoU thresholds fail.
    assert evaluate(Oracle(dataset, 2, shift=4.0), dataset, batch=2)["map"] < 0.5
    # A DataLoader works the same, a shuffled one is refused (ground truth is matched by order).
    assert evaluate(Oracle(dataset, 2), make_loader(dataset, 2))["map"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unshuffled"):
        evaluate(Oracle(dataset, 2), make_loader(dataset, 2, shuffle=True))


def test_evaluate_restores_the_training_mode(odd_shapes):
    dataset = load_dataset(odd_shapes, "val", 64)
    oracle = Oracle(dataset, 2).train()
    evaluate(oracle, dataset)
    assert oracle.training


@pytest.fixture
def trained(tmp_path, nas_main):
    """A short `nas train` that reaches a non-trivial mAP: big objects, plain AdamW at a high lr."""
    arch, out = tmp_path / "tiny.yaml", tmp_path / "run"
    save_arch(tiny_arch(imgsz=128), arch)
    data = "synthetic:n=8,val=8,nc=2,size=32,objects=3"
    assert nas_main(["train", str(arch), "--data", data, "--epochs", "30", "--batch", "8", "--optimizer",
                     "adamw", "--lr", "0.01", "--no-augment", "--out", str(out)]) == 0
    return arch, out, data


def test_nas_val_reproduces_the_trained_map(trained, nas_main, capsys):
    arch, out, data = trained
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["map50"] > 0.1  # learned something, so agreement below is not 0 == 0
    capsys.readouterr()

    assert nas_main(["val", str(arch), "--weights", str(out / "weights.pt"), "--data", data, "--batch", "8",
                     "--json"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed)  # one JSON object, nothing else on stdout
    assert result["map"] == pytest.approx(final["map"], abs=1e-6)
    assert result["map50"] == pytest.approx(final["map50"], abs=1e-6)
    assert result["images"] == 8

    assert nas_main(["val", str(out / "arch.yaml"), "--weights", str(out / "weights.pt"), "--data", data,
                     "--batch", "8"]) == 0
    assert f"mAP {final['map']:.4f}  mAP50 {final['map50']:.4f}" in capsys.readouterr().out


def test_bad_weights_are_refused_with_one_line(tmp_path, nas_main, capsys):
    arch = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(), arch)
    garbage, a_list, other = tmp_path / "garbage.pt", tmp_path / "list.pt", tmp_path / "other.pt"
    garbage.write_bytes(b"definitely not a torch file")
    torch.save([torch.zeros(3)], a_list)
    torch.manual_seed(0)
    from nas.models import build_model
    torch.save(build_model(tiny_arch(neck=48)).state_dict(), other)  # same keys, other widths

    for weights, message in [(tmp_path / "missing.pt", "not found"), (garbage, "cannot read weights"),
                             (a_list, "is not a state dict"), (other, "wrong shape")]:
        code = nas_main(["val", str(arch), "--weights", str(weights), "--data", "synthetic:n=4,val=2,nc=2",
                         "--imgsz", "64"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
