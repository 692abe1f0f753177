"""Training-free ("zero-cost") scores of an untrained detector, for ranking candidates cheaply.

    from evaluators.zero_cost import training_free_scores, naswot, synflow, zico
    training_free_scores(arch, imgsz=320, seed=0)
    # {"naswot": ..., "synflow": ..., "zico": ..., "macs": ..., "params": ...}

Every score has the form `score(model, imgsz, batch, seed) -> float`: higher ranks higher, the
value is finite and the same for the same model and seed, and `model` is left exactly as it was
(weights, buffers, train/eval mode): each score works on a deep copy. Inputs are the built-in
synthetic detection images (`evaluators.data.synthetic`, coloured shapes on textured
backgrounds; with their boxes where a loss is needed), drawn from `seed`, scaled to 0..1 as in
training. The detector's forward returns its raw per-level maps (`Detector.forward`), which is
what the scores read.

- `naswot`: NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021).
  Each ReLU-like unit gives an image a binary code, 1 where the unit's pre-activation is > 0
  (the unit is "on"). For the batch, K[i, j] = the number of units on which images i and j agree
  (both on or both off), summed over every activation layer; the score is log|det K|. A network
  that tells its inputs apart (codes far apart) gets a well-conditioned K and a high score. As in
  the authors' code, the network runs in train mode (BatchNorm on batch statistics) and the hooks
  read the activation layers' inputs. ReLU-like layers are nn.ReLU, ReLU6, LeakyReLU, SiLU,
  Hardswish, GELU and Mish: for all of them the sign of the pre-activation says which side of the
  activation's knee the unit is on (this project's blocks only use ReLU). K + I is used instead
  of K: the paper's log|det K| is -inf for a degenerate network whose codes coincide (K of rank
  1); for a real network the diagonal is the number of units (about 5e4 for a tiny
  detector at 64 px, millions at 320 px), so the ridge of one "unit on which every image agrees only with itself"
  changes the score by < 1e-3.
- `synflow`: SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively
  conserving synaptic flow", NeurIPS 2020), as the zero-cost proxy of Abdelfattah et al.
  ("Zero-Cost Proxies for Lightweight NAS", ICLR 2021): every parameter replaced by its absolute
  value, one all-ones image, R = the sum of all outputs, score = sum over the conv and linear
  weights of |theta * dR/dtheta|. As in that paper's `synflow` (not `synflow_bn`), BatchNorm
  layers are removed (identity): with BatchNorm on batch statistics the constant all-ones image
  would normalise to zero. It is computed in float64, and the score is the natural log of the sum:
  the sum is a product of |weights| along paths and grows by orders of magnitude with depth and
  width (about 1e30 for a tiny detector at 64 px, 1e60..1e70 for the default space's at 320 px,
  still far from float64's 1e308), so the log keeps the ranking and gives
  numbers a correlation can use; log(1 + sum), so that a network with no synaptic flow at all
  (a zeroed layer every path crosses) scores 0 rather than -inf. Data-free: `batch` and `seed` do
  not change it (they are accepted for a uniform signature).
- `zico`: ZiCo (Li et al., "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on
  Gradients", ICLR 2023). The batch is split into two mini-batches (the authors' code uses two
  batches); for each, the gradient of the training loss w.r.t. every conv / linear weight.
  Per layer, the sum over its weights of mean|g| / std(g) across the mini-batches (weights with
  std 0 left out), and the score is the sum over layers of the log of that (layers whose sum is 0
  left out), as in the authors' `caculate_zico`. The loss is this project's detection loss
  (`evaluators.loss.DetectionLoss`) on the synthetic images' boxes, in train mode.
- `macs`, `params`: `evaluators.complexity.complexity` of the deploy graph (re-parameterization
  branches fused): the cheapest rankings, and the baseline any zero-cost score should beat.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.GELU, nn.Mish)
WEIGHTED = (nn.Conv2d, nn.Linear)
SCORES = ("naswot", "synflow", "zico")


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def synthetic_batch(batch: int, imgsz: int, seed: int, nc: int = 4, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` synthetic images (float [B, 3, S, S] in 0..1) and their boxes as loss targets
    [M, 6] (batch_idx, cls, x1, y1, x2, y2) in pixels; the same for the same arguments."""
    from evaluators.data.synthetic import generate

    images, boxes, labels = generate(batch, max(1, min(nc, 100)), seed, imgsz, 6, 0)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255)
    rows = [np.concatenate([np.full((len(b), 1), i, np.float32), lab[:, None].astype(np.float32), b], 1)
            for i, (b, lab) in enumerate(zip(boxes, labels))]
    targets = torch.from_numpy(np.concatenate(rows, 0))
    return x.to(device), targets.to(device)


def _check(imgsz: int, batch: int, least: int, name: str) -> None:
    if imgsz <= 0 or imgsz % 32:
        raise ValueError(f"{name}: imgsz must be a positive multiple of 32, got {imgsz}")
    if batch < least:
        raise ValueError(f"{name}: needs a batch of at least {least} images, got {batch}")


def naswot(model: nn.Module, imgsz: int = 64, batch: int = 8, seed: int = 0) -> float:
    """log|det(K + I)| of the activation-code kernel K over a batch (see the module doc)."""
    _check(imgsz, batch, 2, "naswot")
    probe = copy.deepcopy(model).train()
    x, _ = synthetic_batch(batch, imgsz, seed, getattr(model, "nc", 4), _device(model))
    k = torch.zeros(batch, batch, dtype=torch.float64, device=x.device)

    def count(module, inputs):
        nonlocal k
        code = (inputs[0].detach().reshape(inputs[0].shape[0], -1) > 0).double()
        k += code @ code.T + (1 - code) @ (1 - code).T

    for m in probe.modules():
        if isinstance(m, ACTIVATIONS):
            m.register_forward_pre_hook(count)
    with torch.no_grad():
        probe(x)
    sign, logdet = torch.linalg.slogdet(k + torch.eye(batch, dtype=k.dtype, device=k.device))
    return float(logdet) if sign > 0 else 0.0


def synflow(model: nn.Module, imgsz: int = 64, batch: int = 1, seed: int = 0) -> float:
    """log(1 + sum |theta * dR/dtheta|) with |weights|, BatchNorm removed, an all-ones image, float64."""
    _check(imgsz, 1, 1, "synflow")
    probe = copy.deepcopy(model).eval().double()
    for name, m in list(probe.named_modules()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            parent, _, child = name.rpartition(".")
            setattr(probe.get_submodule(parent) if parent else probe, child, nn.Identity())
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_()
    probe.zero_grad(set_to_none=True)
    x = torch.ones(1, 3, imgsz, imgsz, dtype=torch.float64, device=_device(model))
    out = probe(x)
    sum(o.sum() for o in (out if isinstance(out, (list, tuple)) else [out])).backward()
    total = 0.0
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, WEIGHTED) and m.weight.grad is not None:
                total += float((m.weight * m.weight.grad).abs().sum())
    return math.log1p(total)


def zico(model: nn.Module, imgsz: int = 64, batch: int = 8, seed: int = 0) -> float:
    """ZiCo: sum over layers of log(sum over weights of mean|g| / std(g)) across two mini-batches."""
    from evaluators.loss import DetectionLoss

    _check(imgsz, batch, 4, "zico")
    probe = copy.deepcopy(model).train()
    x, targets = synthetic_batch(batch, imgsz, seed, getattr(model, "nc", 4), _device(model))
    loss_fn = DetectionLoss(probe.nc, probe.reg_max) if hasattr(probe, "reg_max") else None
    layers = [m for m in probe.modules() if isinstance(m, WEIGHTED)]
    grads: list[list[torch.Tensor]] = [[] for _ in layers]
    half = batch // 2
    for lo, hi in ((0, half), (half, batch)):
        probe.zero_grad(set_to_none=True)
        out = probe(x[lo:hi])
        if loss_fn is not None:
            rows = targets[(targets[:, 0] >= lo) & (targets[:, 0] < hi)].clone()
            rows[:, 0] -= lo
            loss = loss_fn(out, rows)[0]
        else:  # not a detector: the mean squared output stands in for a loss
            loss = sum(o.pow(2).mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        for g, m in zip(grads, layers):
            g.append(m.weight.grad.detach().reshape(-1).double().clone() if m.weight.grad is not None
                     else torch.zeros(m.weight.numel(), dtype=torch.float64, device=x.device))
    score = 0.0
    for g in grads:
        g = torch.stack(g)
        std = g.std(0, unbiased=False)  # numpy's default, as in the authors' code
        keep = std > 0
        s = float((g.abs().mean(0)[keep] / std[keep]).sum())
        if s > 0:
            score += math.log(s)
    return score


SCORE_FUNCTIONS = {"naswot": naswot, "synflow": synflow, "zico": zico}


def training_free_scores(arch_or_model, imgsz: int | None = None, seed: int = 0, batch: int = 8,
                         scores=SCORES) -> dict:
    """{"naswot", "synflow", "zico", "macs", "params"} of an architecture (dict or YAML path; built
    with weights drawn from `seed`, without touching torch's global random state) or of a model.
    `imgsz` defaults to the architecture's. `scores` picks a subset of the zero-cost scores."""
    from evaluators.complexity import complexity

    unknown = [s for s in scores if s not in SCORE_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; known: {', '.join(SCORE_FUNCTIONS)}")
    # Building draws weights and fusing branches initialises fresh convs: neither may move the
    # caller's random state (a search's sampler and proxy training seed from it).
    with torch.random.fork_rng(devices=[]):
        if isinstance(arch_or_model, nn.Module):
            model = arch_or_model
        else:
            from nas.models import build_model
            if not isinstance(arch_or_model, (dict, str, Path)):
                raise TypeError(f"expected an architecture dict, a YAML path or a model, got {type(arch_or_model)}")
            torch.manual_seed(seed)
            model = build_model(arch_or_model)
        imgsz = imgsz or getattr(model, "imgsz", None)
        if not imgsz:
            raise ValueError("imgsz is required for a model without an `imgsz` attribute")
        out = {name: SCORE_FUNCTIONS[name](model, imgsz, batch, seed) for name in scores}
        c = complexity(model, imgsz, deploy=True)
    out.update(macs=float(c["macs"]), params=float(c["params"]))
    return out
