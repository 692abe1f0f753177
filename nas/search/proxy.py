"""How long each candidate trains, and the checks that it trains long enough to be ranked.

The proxy budget is counted in optimizer steps, not epochs: four epochs are 64 steps on the
built-in set (256 images at batch 16) but 16 on a 72-image set, where nothing learns and every
candidate scores 0 (issue 12). A search turns its steps into whole epochs of *its* data once, at
the start, so that the pruner, the progress line and the workers agree on the length of a run.
The default and the "too few" line come from benchmarks/bench_fidelity.py (README, "Proxy fidelity").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

from evaluators.train import batches_per_epoch, epochs_for_steps

from .config import DEFAULT_STEPS

# Against an 800-step training of 12 detectors on a seed of its own (Kendall tau, two proxy
# seeds): 16 to 64 steps -0.18 to 0.12, no better than MACs (0.15); 160 steps (the default)
# 0.39 and 0.58; 320 steps, or two seeds of 160 averaged, 0.52. Two 800-step seeds agree at 0.30.
# Under 64 steps the ranking is noise on every reference measured.
TOO_FEW_STEPS = 64
TIE_AFTER = 3        # trained candidates before "they all score the same" is said
TIE = 1e-4           # mAP spread under which candidates are indistinguishable


@dataclass(frozen=True)
class ProxyPlan:
    """One proxy run on this search's data: `epochs` of `train_images` at `batch`."""
    epochs: int
    train_images: int
    batch: int

    @classmethod
    def of(cls, steps: int | None, epochs: int | None, train_images: int, batch: int) -> "ProxyPlan":
        """`epochs` if given, else the whole epochs that give at least `steps` optimizer steps."""
        if epochs is None:
            epochs = epochs_for_steps(steps, batches_per_epoch(train_images, batch))
        return cls(epochs, train_images, batch)

    @property
    def steps(self) -> int:
        return self.epochs * batches_per_epoch(self.train_images, self.batch)

    def describe(self) -> str:
        """e.g. '64 optimizer steps (4 epochs of 256 training images at batch 16)'."""
        return (f"{self.steps} optimizer steps ({self.epochs} epoch{'s' * (self.epochs != 1)} of "
                f"{self.train_images} training images at batch {self.batch})")

    def too_short(self) -> str | None:
        """A warning when a run is too short to rank candidates, else None."""
        if self.steps >= TOO_FEW_STEPS:
            return None
        return (f"the proxy is {self.describe()}: under {TOO_FEW_STEPS} steps its ranking of candidates was "
                f"measured to be noise (README, 'Proxy fidelity'); use --steps {DEFAULT_STEPS} (the default)")


class TieWatch:
    """Says once when every trained candidate so far scores the same mAP: the ranking is noise."""

    def __init__(self, study: optuna.Study, warn: Callable[[str], None], describe_proxy: str):
        self.study, self.warn, self.describe_proxy = study, warn, describe_proxy
        self.said = False

    def __call__(self) -> None:
        if self.said:
            return
        scores = [t.values[0] for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.user_attrs.get("trained") and t.values and math.isfinite(t.values[0])]
        if len(scores) < TIE_AFTER or max(scores) - min(scores) >= TIE:
            return
        self.said = True
        self.warn(f"all {len(scores)} trained candidates score mAP {max(scores):.4f}: the proxy "
                  f"({self.describe_proxy}) is too short to separate them; stop (Ctrl-C) and search again "
                  f"with more --steps, or on more data")
