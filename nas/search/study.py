"""The Optuna study: the single source of truth of a search.

Only the driver process touches it. This module opens (or creates) it, checks that a resumed
study is the same search, recovers trials a crash left RUNNING, and reads results back.
"""
from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.errors import UserError

from .config import SearchConfig

# Settings that define *what* is searched: changing them mid-study would mix incomparable trials.
IDENTITY_KEYS = ("space_hash", "budget_ms", "objective")


def _storage(url: str):
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url) if "://" in url else url
    except Exception as e:  # bad URL, missing driver, unreachable server
        raise UserError(f"cannot open storage {url!r}: {str(e).splitlines()[0]}") from None


def directions(objective: str) -> list[str]:
    return ["maximize", "minimize"] if objective == "pareto" else ["maximize"]


def open_study(cfg: SearchConfig, space_hash: str, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the study, or load it and check it is the same search."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(cfg.storage)
    study = optuna.create_study(study_name=cfg.study, storage=storage, load_if_exists=True,
                                directions=directions(cfg.objective), sampler=sampler, pruner=pruner)
    identity = {"space_hash": space_hash, "budget_ms": cfg.budget_ms, "objective": cfg.objective}
    stored = study.user_attrs
    if "config" not in stored:
        for k, v in identity.items():
            study.set_user_attr(k, v)
        study.set_user_attr("config", cfg.to_dict())
    else:
        for k in IDENTITY_KEYS:
            if stored.get(k) != identity[k]:
                raise UserError(f"study {cfg.study!r} was created with {k}={stored.get(k)!r}, not {identity[k]!r}; "
                                f"resume it unchanged or pass --study NEW_NAME")
        study.set_user_attr("config", {**stored["config"], "trials": cfg.trials})
    return study


def load_study(name: str, storage: str) -> optuna.Study:
    """An existing study (for status / export / resume); UserError if there is none."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        raise UserError(f"no study {name!r}: {storage[len('sqlite:///'):]} does not exist")
    try:
        return optuna.load_study(study_name=name, storage=_storage(storage), sampler=optuna.samplers.RandomSampler())
    except KeyError:
        raise UserError(f"no study {name!r} in {storage}") from None


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Trials a killed driver left RUNNING: mark FAIL (reason kept) and queue their params again,
    so the re-run evaluates the same candidate. Returns the recovered trial numbers."""
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted: the search stopped mid-trial")
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number}, skip_if_exists=False)
        numbers.append(t.number)
    return numbers


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count towards --trials: COMPLETE (feasible or not) and PRUNED."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def is_feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    """The feasible COMPLETE trial of highest mAP (ties: lower latency)."""
    ok = [t for t in study.get_trials(deepcopy=False) if is_feasible(t) and not math.isnan(t.values[0])]
    return max(ok, key=lambda t: (t.values[0], -t.user_attrs.get("latency_ms", 0.0)), default=None)


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible trials that no other feasible trial beats on both mAP and latency."""
    ok = [t for t in study.get_trials(deepcopy=False) if is_feasible(t)]
    key = lambda t: (t.values[0], t.user_attrs.get("latency_ms", math.inf))  # noqa: E731
    front = [t for t in ok if not any(
        key(o)[0] >= key(t)[0] and key(o)[1] <= key(t)[1] and key(o) != key(t) for o in ok)]
    return sorted(front, key=lambda t: key(t)[1])
