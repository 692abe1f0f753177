"""From the study back to files: the best feasible architecture, or the whole Pareto front."""
from __future__ import annotations

from pathlib import Path

import optuna

from nas.errors import UserError
from nas.models import load_arch, save_arch

from .study import best_feasible, measurements, pareto_front


def trial_arch(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    """The trial's architecture with a `meta:` record of where it came from and what it scored."""
    a = trial.user_attrs
    arch = dict(a["arch"])
    arch["meta"] = {
        "study": study.study_name, "trial": trial.number,
        "map": round(float(trial.values[0]), 6), "map50": round(float(a.get("map50", float("nan"))), 6),
        "latency_ms": a.get("latency_ms"), "latency_source": a.get("latency_source"),
        "latency_measured_ms": measurements(study).get(trial.number, {}).get("latency_measured_ms"),
        "budget_ms": a.get("budget_ms"), "target": a.get("target"),
        "params": a.get("params"), "flops": a.get("flops"),
        "deploy_params": a.get("deploy_params"), "deploy_flops": a.get("deploy_flops"),
        "space": study.user_attrs.get("config", {}).get("space"), "space_hash": study.user_attrs.get("space_hash"),
        "fidelity": study.user_attrs.get("config", {}).get("fidelity"),
    }
    load_arch(arch)  # it must build: refuse to write a file that would not
    return arch


def export_best(study: optuna.Study, out: str | Path) -> dict:
    best = best_feasible(study)
    if best is None:
        raise UserError(f"study {study.study_name!r} has no feasible trial (none trained within the budget yet)")
    arch = trial_arch(study, best)
    save_arch(arch, out)
    return arch


def export_pareto(study: optuna.Study, folder: str | Path) -> list[Path]:
    """Every Pareto-optimal feasible architecture as YAML, plus pareto.png (mAP against latency)."""
    front = pareto_front(study)
    if not front:
        raise UserError(f"study {study.study_name!r} has no feasible trial to export")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in front:
        path = folder / f"trial{t.number:04d}-{t.user_attrs['latency_ms']:.2f}ms-map{t.values[0]:.4f}.yaml"
        save_arch(trial_arch(study, t), path)
        paths.append(path)
    paths.append(plot_pareto(study, front, folder / "pareto.png"))
    return paths


def plot_pareto(study: optuna.Study, front, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [t for t in study.get_trials(deepcopy=False) if t.values and t.user_attrs.get("trained")]
    budget = study.user_attrs.get("budget_ms")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([t.user_attrs["latency_ms"] for t in trained], [t.values[0] for t in trained], s=14,
               color="0.6", label="trained trials")
    ax.plot([t.user_attrs["latency_ms"] for t in front], [t.values[0] for t in front], "o-", color="C0",
            label="Pareto front")
    if budget:
        ax.axvline(budget, color="C3", linestyle="--", label=f"budget {budget:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("proxy mAP@0.5:0.95")
    ax.set_title(study.study_name)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
