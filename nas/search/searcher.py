"""A Ray Tune Searcher over an Optuna study (ask/tell), and the Stopper that prunes through it.

Why not Tune's OptunaSearch: it has no constraint hook, forces a no-op pruner and records trials
stopped early as COMPLETE with a partial score. Here Optuna keeps full control:
- suggest(): study.ask() -> architecture -> latency. Over budget: told at once as infeasible
  (never trained, never sent to Ray); within budget: sent to Ray for proxy training.
- on_trial_result(): trial.report(mAP, epoch), so the Optuna pruner sees the learning curve
  (multi-objective studies cannot report: their curve is kept as a user attribute only).
- PruneStopper asks the pruner; a stopped trial is told PRUNED, never COMPLETE.
- on_trial_complete(): tell COMPLETE with the final mAP, or FAIL with the reason; a failure is a
  trial's end, never the search's, until `max_failures` of them come in a row.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import optuna
from optuna.trial import TrialState
from ray.tune import Stopper
from ray.tune.search import Searcher

from .cluster import node_lost
from .config import SearchConfig
from .study import evaluated


class OptunaSearcher(Searcher):
    def __init__(self, study: optuna.Study, cfg: SearchConfig, make_candidate: Callable[[optuna.Trial], dict],
                 on_change: Callable[[], None] = lambda: None):
        super().__init__(metric="map", mode="max")
        self.study, self.cfg = study, cfg
        self.make_candidate = make_candidate  # trial -> {"arch", "latency_ms", "fidelity", "threads"} (driver side)
        self.on_change = on_change
        self.multi_objective = len(study.directions) > 1  # Optuna cannot prune those: no trial.report
        self.live: dict[str, optuna.Trial] = {}  # Tune trial id -> Optuna trial
        self.reported: dict[str, int] = {}       # Tune trial id -> last epoch told to Optuna
        self.started: dict[str, float] = {}
        self.pruned: set[str] = set()
        self.done = len(evaluated(study))        # evaluated trials: what --trials counts
        self.failures_in_a_row = 0
        self.over_budget_in_a_row = 0
        self.fastest_over_budget = math.inf      # ms, over the current run of over-budget candidates
        self.stop_reason: str | None = None
        self.trial_seconds: list[float] = []

    def __getstate__(self) -> dict:
        # Tune pickles its search algorithm to checkpoint the experiment. Optuna's storage is our
        # record of the search (and holds locks that cannot be pickled), so only the config goes.
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # -- Tune calls these ---------------------------------------------------------------------------
    def suggest(self, trial_id: str):
        while True:
            if self.stop_reason or self.done >= self.cfg.trials:
                return None if self.live else Searcher.FINISHED
            if self.done + len(self.live) >= self.cfg.trials:
                return None  # the target is covered by running trials; wait (one may still fail)
            trial = self.study.ask()
            try:
                cand = self.make_candidate(trial)
            except Exception as e:  # noqa: BLE001 - a candidate that cannot be built is a FAIL, not a crash
                self._fail(trial, f"{type(e).__name__}: {e}")
                continue
            if cand["latency_ms"] > self.cfg.budget_ms:
                self._tell_over_budget(trial, cand)
                continue
            self.over_budget_in_a_row, self.fastest_over_budget = 0, math.inf
            trial.set_user_attr("trained", True)
            self.live[trial_id] = trial
            self.started[trial_id] = time.perf_counter()
            self.on_change()
            return {"arch": cand["arch"], "fidelity": cand["fidelity"], "threads": cand["threads"],
                    "number": trial.number}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Idempotent: the stopper may see a result before Tune hands it to us.
        trial = self.live.get(trial_id)
        if trial is None or result.get("final") or result.get("failed"):
            return
        epoch = int(result.get("epoch", 0))
        if trial_id not in self.reported and "node" in result:  # where it runs: to find a worker, or a bad node
            trial.set_user_attr("worker", {"node": result["node"], "node_id": result.get("node_id"),
                                           "pid": result.get("pid")})
            self.reported[trial_id] = 0
        if epoch < 1 or self.reported.get(trial_id, 0) >= epoch:
            return  # the start report (epoch 0), or a result already told
        self.reported[trial_id] = epoch
        curve = [*trial.user_attrs.get("curve", []), _round(result["map"])]
        trial.set_user_attr("curve", curve)  # mAP per epoch, also for multi-objective studies
        if not self.multi_objective and not math.isnan(result["map"]):
            trial.report(result["map"], step=epoch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        self.reported.pop(trial_id, None)
        if trial is None:
            return
        wall = time.perf_counter() - self.started.pop(trial_id)
        trial.set_user_attr("wall_s", round(wall, 3))
        result = result or {}
        if error or result.get("failed"):
            self._fail(trial, result.get("reason") or _death(trial.user_attrs.get("worker") or {}))
            return
        if "train_s" in result:  # time inside the worker; wall_s - train_s is scheduling overhead
            trial.set_user_attr("train_s", round(result["train_s"], 3))
        mAP = result.get("map", float("nan"))
        trial.set_user_attr("map", mAP)
        trial.set_user_attr("map50", result.get("map50", float("nan")))
        if trial_id in self.pruned:
            self.pruned.discard(trial_id)
            trial.set_user_attr("epochs_run", int(result.get("epoch", 0)))
            self.study.tell(trial, state=TrialState.PRUNED)
        elif math.isnan(mAP):
            self._fail(trial, "mAP is NaN")
            return
        else:
            trial.set_user_attr("epochs_run", int(result.get("epochs_run", result.get("epoch", 0))))
            self.study.tell(trial, self._values(mAP, trial.user_attrs["latency_ms"]))
        self.failures_in_a_row = 0
        self.trial_seconds.append(wall)
        self.done += 1
        self.on_change()

    # -- helpers ------------------------------------------------------------------------------------
    def should_prune(self, trial_id: str) -> bool:
        trial = self.live.get(trial_id)
        if self.cfg.pruner == "none" or trial is None or self.multi_objective:
            return False
        if trial.should_prune():  # the pruner never judges the last epoch (nas.search.pruning)
            self.pruned.add(trial_id)
            return True
        return False

    def _values(self, mAP: float, latency_ms: float):
        return [mAP, latency_ms] if self.cfg.objective == "pareto" else mAP

    def _tell_over_budget(self, trial: optuna.Trial, cand: dict) -> None:
        """Recorded (COMPLETE, infeasible) so that the sampler learns where the budget lies, but
        never trained and not counted towards --trials."""
        trial.set_user_attr("trained", False)
        trial.set_user_attr("map", 0.0)
        self.study.tell(trial, self._values(0.0, cand["latency_ms"]))
        self.over_budget_in_a_row += 1
        self.fastest_over_budget = min(self.fastest_over_budget, cand["latency_ms"])
        if self.over_budget_in_a_row >= self.cfg.max_over_budget:
            looser = math.ceil(self.fastest_over_budget * 1.25)
            self.stop_reason = (f"{self.over_budget_in_a_row} candidates in a row were over the "
                                f"{self.cfg.budget_ms:g} ms budget (the fastest took {self.fastest_over_budget:.2f} ms): "
                                f"almost nothing in this space fits; try --budget {looser}ms or a smaller space")
        self.on_change()

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason[:500])
        self.study.tell(trial, state=TrialState.FAIL)
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= self.cfg.max_failures:
            self.stop_reason = (f"{self.failures_in_a_row} trials failed in a row (last: {reason[:200]}); "
                                f"see `nas status {self.cfg.study}` for each reason")
        self.on_change()


def _death(worker: dict) -> str:
    """Why a trial's worker vanished without a word: its node was lost, or the process died."""
    if node_lost(worker.get("node_id")):
        return f"its Ray node was lost mid-trial ({worker.get('node')}, node {worker['node_id'][:12]})"
    return "the Ray worker died (killed, out of memory, or its node was lost)"


def _round(v: float) -> float:
    return v if math.isnan(v) else round(float(v), 6)


class PruneStopper(Stopper):
    """Tune stops a trial when the Optuna pruner says so (the searcher then tells PRUNED)."""

    def __init__(self, searcher: OptunaSearcher):
        self.searcher = searcher

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("final") or result.get("failed"):
            return False
        self.searcher.on_trial_result(trial_id, result)
        return self.searcher.should_prune(trial_id)

    def stop_all(self) -> bool:
        return False
