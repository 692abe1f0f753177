"""Proxy trainer: it learns (overfits a handful of images), stops when asked, refuses NaN, and
`nas train` writes weights.pt / metrics.json. Tiny models and images keep the file fast."""
from __future__ import annotations

import json
import math

import pytest
import torch

import evaluators.train as trainer
from evaluators.data import load_dataset
from evaluators.train import NonFiniteLoss, Stop, build_optimizer, train, warmup_cosine
from nas.errors import UserError
from nas.models import build_model, pan_neck, save_arch, stage_backbone

TINY_DATA = "synthetic:n=8,val=4,nc=2,size=64,objects=3"


def tiny_arch(nc: int = 2, imgsz: int = 64) -> dict:
    """A ~180k-parameter Ghost-YOLO: four one-block stages and a narrow PAN neck."""
    def stage(width, stride):
        return dict(width=width, depth=1, expansion=3, kernel=3, stride=stride, se=0, ratio=2, dfc=0,
                    branches=0, scale=False)
    rows, taps = stage_backbone(16, [stage(16, 2), stage(24, 2), stage(32, 2), stage(48, 2)], 64)
    return {"nc": nc, "imgsz": imgsz, "backbone": rows, "head": pan_neck(taps, len(rows), (32, 32, 48), 1, 32)}


def tiny_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(tiny_arch(**kw))


def test_overfits_a_handful_of_images():
    """The whole loop learns: 8 images, train = val, no augmentation -> mAP50 >= 0.9.
    Objects are drawn at 32 px and shown at 128 px, so every box spans at least 3 stride-8 cells."""
    data = load_dataset("synthetic:n=8,nc=2,size=32,objects=3,seed=0", "train", 128)
    seen = []

    def stop_when_learned(epoch, metrics):
        seen.append(metrics.get("map50"))
        return not metrics.get("map50", 0) >= 0.95

    result = train(tiny_model(imgsz=128), data, val=data, epochs=80, batch=8, optimizer="adamw", lr=0.01,
                   warmup_iters=10, val_every=20, callback=stop_when_learned, seed=0)
    assert result.final["map50"] >= 0.9, result.history
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert len(seen) == result.epochs_run  # called after every epoch, validated or not
    assert [m is not None for m in seen] == [(e + 1) % 20 == 0 for e in range(result.epochs_run)]


def test_callback_runs_every_epoch_and_can_stop_training():
    calls = []

    def callback(epoch, metrics):
        calls.append((epoch, metrics["epoch"], metrics["map"]))
        return epoch < 1  # False after the second epoch

    result = train(tiny_model(), TINY_DATA, epochs=5, imgsz=64, batch=4, callback=callback)
    assert [c[:2] for c in calls] == [(0, 1), (1, 2)]
    assert result.epochs_run == 2 and result.stopped == "callback"
    assert result.final["map"] == calls[-1][2]

    def raise_stop(epoch, metrics):
        raise Stop

    result = train(tiny_model(), TINY_DATA, epochs=5, imgsz=64, batch=4, callback=raise_stop, val_every=3)
    assert result.epochs_run == 1 and result.stopped == "callback"
    assert "map" in result.history[-1]  # the last epoch run is validated even off the val_every rhythm


def test_other_callback_exceptions_propagate():
    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        raise Pruned

    with pytest.raises(Pruned):
        train(tiny_model(), TINY_DATA, epochs=3, imgsz=64, batch=4, callback=prune)


def test_time_limit_stops_after_the_epoch_that_passes_it():
    result = train(tiny_model(), TINY_DATA, epochs=4, imgsz=64, batch=4, time_limit=1e-6, val_every=10)
    assert result.epochs_run == 1 and result.stopped == "time_limit"
    assert math.isfinite(result.final["map"])


def test_nan_weights_abort_with_a_clear_error():
    model = tiny_model()
    with torch.no_grad():
        model.head.cls[0][-1].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, iteration 1/2"):
        train(model, TINY_DATA, epochs=2, imgsz=64, batch=4)


def test_ema_is_validated_and_differs_from_the_raw_weights(monkeypatch):
    evaluated = []
    real_evaluate = trainer.evaluate

    def spy(model, *args, **kwargs):
        evaluated.append(model)
        return real_evaluate(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", spy)
    model = tiny_model()
    result = train(model, TINY_DATA, epochs=2, imgsz=64, batch=4, ema_tau=1.0, ema_decay=0.9)
    assert evaluated and all(m is result.ema for m in evaluated)
    assert result.ema is not model
    raw, ema = model.state_dict(), result.ema.state_dict()
    assert raw.keys() == ema.keys()
    assert any(not torch.allclose(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())


def test_same_seed_same_run():
    runs = [train(tiny_model(), TINY_DATA, epochs=1, imgsz=64, batch=4, seed=3) for _ in range(2)]
    assert runs[0].history[0]["loss"] == runs[1].history[0]["loss"]
    assert runs[0].final == runs[1].final


def test_model_and_data_must_agree_on_classes():
    with pytest.raises(UserError, match="3 classes but .* has 2"):
        train(tiny_model(nc=3), TINY_DATA, epochs=1, imgsz=64, batch=4)


def test_no_weight_decay_on_batchnorm_and_biases():
    model = tiny_model()
    opt, lr = build_optimizer(model, "sgd", None, 0.937, 5e-4, iterations=100)
    decayed, plain = opt.param_groups
    assert isinstance(opt, torch.optim.SGD) and lr == 0.01
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    bn_and_bias = {id(p) for n, p in model.named_parameters() if n.endswith(".bias") or p.ndim == 1}
    assert {id(p) for p in plain["params"]} == bn_and_bias
    assert all(p.ndim == 4 for p in decayed["params"])
    assert isinstance(build_optimizer(model, "auto", None, 0.937, 5e-4, iterations=100)[0], torch.optim.AdamW)
    assert isinstance(build_optimizer(model, "auto", None, 0.937, 5e-4, iterations=20_000)[0], torch.optim.SGD)


def test_warmup_then_cosine():
    lr = warmup_cosine(0.1, 0.01, warmup=10, total=110)
    assert lr(0) == pytest.approx(0.01) and lr(9) == pytest.approx(0.1)
    assert [lr(i) for i in range(10)] == sorted(lr(i) for i in range(10))  # rising
    after = [lr(i) for i in range(10, 110)]
    assert after == sorted(after, reverse=True)  # falling
    assert lr(10) == pytest.approx(0.1) and lr(109) == pytest.approx(0.001)
    assert lr(60) == pytest.approx(0.001 + 0.099 * 0.5, rel=0.02)  # halfway down the cosine


def test_cli_train_writes_weights_and_metrics(tmp_path, nas_main, capsys):
    arch = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(nc=80), arch)  # nc is taken from the data, with a note
    out = tmp_path / "run"
    assert nas_main(["train", str(arch), "--data", TINY_DATA, "--epochs", "2", "--imgsz", "64", "--batch", "4",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 images" in printed and "using the data's 2 classes" in printed
    assert "epoch 2/2" in printed and "mAP50" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for h in metrics["history"]:
        assert {"loss", "box", "cls", "dfl", "map", "map50", "time", "images_per_s"} <= h.keys()
    assert metrics["final"]["map"] == metrics["history"][-1]["map"]
    assert metrics["epochs_run"] == 2 and metrics["stopped"] == "completed"
    assert metrics["dataset"]["train_report"]["images"] == 8

    state = torch.load(out / "weights.pt", map_location="cpu", weights_only=True)
    model = build_model(str(out / "arch.yaml"))
    assert model.nc == 2
    model.load_state_dict(state)  # every key, unfused


def test_cli_train_refusals(tmp_path, nas_main, capsys, monkeypatch):
    arch = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(), arch)
    base = ["train", str(arch), "--data", TINY_DATA, "--out", str(tmp_path / "run")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for extra, message in [(["--device", "cuda"], "CUDA is not available"),
                           (["--epochs", "0"], "--epochs must be at least 1"),
                           (["--time-limit", "-1"], "--time-limit must be a positive"),
                           (["--data", "synthetic:bogus=1"], "unknown key 'bogus'")]:
        assert nas_main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert nas_main(["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
