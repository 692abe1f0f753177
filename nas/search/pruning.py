"""Multi-fidelity: which Optuna pruner stops unpromising candidates, and the rules every one obeys.

Steps are 1-based epochs. Two rules hold whatever the pruner:
- a trial that reached its last epoch is never pruned: stopping it saves nothing and would hide a
  finished result (it is COMPLETE);
- only trials that reported a learning curve are compared: over-budget candidates are COMPLETE but
  never trained, so they must not set a median or fill a rung (Optuna's pruners read intermediate
  values, which those trials do not have, and `n_min_trials` keeps the median pruner honest).

The default (config.DEFAULT_PRUNER) was chosen by `benchmarks/bench_pruner.py` (figures in the README).
"""
from __future__ import annotations

import optuna
from optuna.pruners import BasePruner

from .config import PRUNERS


class _KeepsLastEpoch:
    """Mixin: never judge the last epoch (a trial that trained to the end is COMPLETE). A mixin,
    not a wrapper, because Optuna's samplers recognise HyperbandPruner by its type."""
    epochs: int

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step >= self.epochs:
            return False
        return super().prune(study, trial)


class MedianPruner(_KeepsLastEpoch, optuna.pruners.MedianPruner):
    pass


class SuccessiveHalvingPruner(_KeepsLastEpoch, optuna.pruners.SuccessiveHalvingPruner):
    pass


class HyperbandPruner(_KeepsLastEpoch, optuna.pruners.HyperbandPruner):
    pass


def median_warmup(epochs: int) -> int:
    """The first epoch the median pruner judges: the first past half the proxy (2 of 3, 3 of 4,
    6 of 10). Measured on replayed searches: judging from epoch 2 of a 10-epoch (160-step) proxy
    lost the best candidate in a third of trial orders, judging from epoch 6 in one in twenty."""
    return epochs // 2 + 1


def make_pruner(kind: str, epochs: int, warmup: int | None = None) -> BasePruner:
    """The pruner of a search of `epochs` proxy epochs; "none" (or a single epoch) never prunes.
    `warmup` (median only) is the first epoch judged (default: median_warmup); benchmarks/bench_pruner.py
    varies it."""
    if kind not in PRUNERS:
        raise ValueError(f"unknown pruner {kind!r}: use one of {', '.join(PRUNERS)}")
    if kind == "none" or epochs < 2:
        return optuna.pruners.NopPruner()
    if kind == "median":
        # Judged only past half the proxy, against the median of at least 3 trials that reached
        # the same epoch: early mAP of a from-scratch proxy ranks poorly (bench_pruner.py, README).
        pruner = MedianPruner(n_startup_trials=0, n_warmup_steps=warmup or median_warmup(epochs), n_min_trials=3)
    elif kind == "sha":
        # Rungs at epochs 1, 3, 9, ...: keep the best third at each (asynchronous successive halving).
        pruner = SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    else:
        pruner = HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    pruner.epochs = epochs
    return pruner
