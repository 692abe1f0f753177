"""Exponential moving average of a model's weights, the copy that gets validated and saved.

Averaging the weights of the last few hundred steps smooths out the noise of SGD/AdamW and
usually scores a few mAP points above the raw weights of a short training. The decay ramps up
from 0 (`decay * (1 - exp(-updates / tau))`, as in Ultralytics/timm), so early on the average
follows the model closely instead of remembering its random initial weights.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """`ema = ModelEMA(model)`; after each optimizer step `ema.update(model)`; evaluate `ema.module`.

    The average covers every floating-point parameter and buffer (BatchNorm running statistics
    included); integer buffers such as `num_batches_tracked` are copied. One update is a single
    fused `torch._foreach_lerp_` over all tensors, so it costs about one pass over the weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0
        # state_dict() tensors alias the live parameters and buffers, so these lists stay valid
        # while the optimizer updates the weights in place.
        self._ema_float, self._ema_int = _split(self.module)
        self._pairs_for = id(model)
        self._model_float, self._model_int = _split(model)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if id(model) != self._pairs_for:  # a different module than the one copied: re-pair once
            self._pairs_for = id(model)
            self._model_float, self._model_int = _split(model)
        self.updates += 1
        # lerp_(ema, model, w) = ema + w * (model - ema) = decay * ema + (1 - decay) * model
        torch._foreach_lerp_(self._ema_float, self._model_float, 1 - self.current_decay())
        for e, m in zip(self._ema_int, self._model_int):
            e.copy_(m)


def _split(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    state = model.state_dict()
    floats = [v for v in state.values() if v.dtype.is_floating_point]
    ints = [v for v in state.values() if not v.dtype.is_floating_point]
    return floats, ints
