"""The Optuna study: the single source of truth of a search.

Only the driver process touches it. This module opens (or creates) it, checks that a resumed
study is the same search, recovers trials a crash left RUNNING, and reads results back.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError

from nas.errors import UserError

from .config import IDENTITY_FLAGS, SearchConfig


def _storage(url: str):
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in url:
        return url
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as e:  # bad URL, missing driver, unreachable server
            if attempt < 2 and ("already exists" in str(e) or isinstance(e, IntegrityError)):
                # another process (a dashboard, a status poll, a second driver) created the schema at the
                # same moment: a table created twice, or the schema version stamped twice
                time.sleep(0.2 * (attempt + 1))
                continue
            cause = getattr(e, "orig", None) or e  # the driver's own words, without SQLAlchemy's wrapper
            raise UserError(f"cannot open storage {url!r}: {str(cause).splitlines()[0]}") from None


def directions(objective: str) -> list[str]:
    return ["maximize", "minimize"] if objective == "pareto" else ["maximize"]


def open_study(cfg: SearchConfig, space_hash: str, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner, extra: dict | None = None) -> optuna.Study:
    """Create the study, or load it and refuse to go on unless it is the same search.

    A new study records cfg, its identity (IDENTITY_FLAGS) and `extra` (e.g. the data split used).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(cfg.storage)
    identity = cfg.identity(space_hash)
    existing = _existing(cfg.study, storage)
    if existing is not None:
        stored = existing.user_attrs
        if "config" in stored:
            _check_same_search(cfg.study, stored.get("identity") or _identity_of_old(stored), identity)
    study = optuna.create_study(study_name=cfg.study, storage=storage, load_if_exists=True,
                                directions=directions(cfg.objective), sampler=sampler, pruner=pruner)
    if "config" not in study.user_attrs:
        for key, value in {**(extra or {}), "space_hash": space_hash, "budget_ms": cfg.budget_ms,
                           "objective": cfg.objective, "identity": identity}.items():
            study.set_user_attr(key, value)
        study.set_user_attr("config", cfg.to_dict())  # last: its presence marks a complete record
    else:  # the same search; how it runs (target, workers, ...) is this invocation's
        study.set_user_attr("config", {**study.user_attrs["config"], "trials": cfg.trials, "workers": cfg.workers})
    return study


def _existing(name: str, storage) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
    except KeyError:
        return None


def _identity_of_old(stored: dict) -> dict:
    """Studies recorded before the whole identity was: derive it from their stored config."""
    return SearchConfig.from_dict(stored["config"]).identity(stored.get("space_hash"))


def _check_same_search(name: str, stored: dict, wanted: dict) -> None:
    differ = [k for k in IDENTITY_FLAGS if k in stored and stored[k] != wanted.get(k)]
    if not differ:
        return
    what = "; ".join("the space file has changed since" if k == "space_hash" else
                     f"{IDENTITY_FLAGS[k]} {_show(stored[k])}, not {_show(wanted.get(k))}" for k in differ)
    raise UserError(f"study {name!r} is another search ({what}): resume it as it was with `nas resume {name}`, "
                    f"or start a new study with --study NEW_NAME")


def _show(value) -> str:
    # None is "not given" (e.g. --steps when the study was made with --epochs), not the default value
    return "unset" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


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
    """Trials a killed driver left RUNNING: re-run each with the same params. Returns their numbers."""
    queued = {t.user_attrs.get("rerun_of") for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        requeue_interrupted(study, t.number, t.params, "interrupted: the search stopped mid-trial",
                            already_queued=t.number in queued)
    return [t.number for t in running]


def requeue_interrupted(study: optuna.Study, number: int, params: dict, reason: str,
                        already_queued: bool = False) -> None:
    """An interrupted trial is FAIL (reason kept) and its params are queued again, so that the next
    run evaluates the same candidate. Queue first: a driver killed between the two steps leaves the
    trial RUNNING, and the next recovery finds its re-run already queued. Trials that failed on
    their own are never re-run (a deterministic failure would loop)."""
    if not already_queued:
        study.enqueue_trial(params, user_attrs={"rerun_of": number}, skip_if_exists=False)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    study._storage.set_trial_user_attr(trial_id, "fail_reason", reason)
    study.tell(number, state=TrialState.FAIL)


def trial_kind(t: FrozenTrial) -> str:
    """What a trial is to the search: trained, over_budget, pruned, failed, running or waiting.
    Over-budget candidates are COMPLETE in Optuna (so that the sampler learns where the budget
    lies) but were never trained."""
    if t.state == TrialState.COMPLETE:
        return "trained" if t.user_attrs.get("trained") is True else "over_budget"
    return {TrialState.PRUNED: "pruned", TrialState.FAIL: "failed", TrialState.RUNNING: "running"}.get(t.state,
                                                                                                      "waiting")


def is_evaluated(t: FrozenTrial) -> bool:
    """Counts towards --trials: trained to the end (COMPLETE) or stopped by the pruner (PRUNED);
    over-budget and failed trials do not."""
    return trial_kind(t) in ("trained", "pruned")


def evaluated(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if is_evaluated(t)]


def is_feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())


def ranked_feasible(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible COMPLETE trials by the budget check, highest mAP first (ties: lower latency)."""
    ok = [t for t in study.get_trials(deepcopy=False) if is_feasible(t) and not math.isnan(t.values[0])]
    return sorted(ok, key=lambda t: (-t.values[0], t.user_attrs.get("latency_ms", 0.0)))


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    """The feasible trial of highest mAP (ties: lower latency), passing over any whose whole-model
    measurement at the end of the search came out over budget."""
    measured = measurements(study)
    budget = study.user_attrs.get("budget_ms", math.inf)
    return next((t for t in ranked_feasible(study)
                 if measured.get(t.number, {}).get("latency_measured_ms", 0.0) <= budget), None)


def next_to_measure(study: optuna.Study, measure_best: int, budget_ms: float) -> FrozenTrial | None:
    """The next candidate to measure whole at the end of a search, or None: in today's rank order, the
    best `measure_best` feasible ones, and past them until one measures within budget (at most 4x as
    many). Today's: a search resumed with more trials measures its new leaders, however many
    candidates an earlier run measured."""
    measured = measurements(study)
    fits = False
    for rank, t in enumerate(ranked_feasible(study)):
        if rank >= 4 * measure_best or (rank >= measure_best and fits):
            return None
        if t.number not in measured:
            return t
        fits = fits or measured[t.number]["latency_measured_ms"] <= budget_ms
    return None


def measurements(study: optuna.Study) -> dict[int, dict]:
    """Whole-model latencies measured at the end of a search, by trial number: {"latency_measured_ms",
    "target"}. Kept on the study: a finished trial's own attributes cannot change."""
    return {int(k): v for k, v in study.user_attrs.get("measured", {}).items()}


def record_measurement(study: optuna.Study, number: int, ms: float, target: dict) -> None:
    stored = dict(study.user_attrs.get("measured", {}))
    stored[str(number)] = {"latency_measured_ms": round(float(ms), 4), "target": target}
    study.set_user_attr("measured", stored)


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible trials that no other feasible trial beats on both mAP and latency."""
    ok = [t for t in study.get_trials(deepcopy=False) if is_feasible(t)]
    key = lambda t: (t.values[0], t.user_attrs.get("latency_ms", math.inf))  # noqa: E731
    front = [t for t in ok if not any(
        key(o)[0] >= key(t)[0] and key(o)[1] <= key(t)[1] and key(o) != key(t) for o in ok)]
    return sorted(front, key=lambda t: key(t)[1])
