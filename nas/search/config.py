"""Everything a search needs to know, in one serialisable record stored with the study.

`nas resume STUDY` rebuilds the search from this record, so a resumed study keeps its space,
budget, target and fidelity even if the user forgets a flag.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from nas.errors import UserError

STUDIES_DIR = Path("studies")
PRUNERS = ("median", "sha", "hyperband", "none")  # built by nas.search.pruning
DEFAULT_PRUNER = "median"  # chosen by benchmarks/bench_pruner.py (README)
DEFAULT_STEPS = 160  # proxy optimizer steps, chosen by benchmarks/bench_fidelity.py (README; nas.search.proxy)
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# The settings that define a search, with the flag that sets each. A study records them when it is
# created; resuming with any of them changed would mix incomparable trials, so it is refused.
# Not here: how the search runs (--trials, --workers, --cpus-per-trial, --address, --storage, ...).
IDENTITY_FLAGS = {
    "space_hash": "the space file", "budget_ms": "--budget", "objective": "--objective",
    "sampler": "--sampler", "pruner": "--pruner", "seed": "--seed",
    "data": "--data", "steps": "--steps", "epochs": "--epochs", "imgsz": "--imgsz", "batch": "--batch", "lr": "--lr",
    "latency": "--latency", "latency_device": "--latency-device", "latency_backend": "--latency-backend",
    "latency_threads": "--latency-threads", "latency_target": "--latency-target",
}


@dataclass
class Fidelity:
    """How each candidate is proxy-trained and scored."""
    data: str = "synthetic"
    # The proxy's length: optimizer steps, the same amount of learning on any data set (a search
    # rounds them up to whole epochs of its data), or, if given, a number of epochs instead.
    steps: int | None = DEFAULT_STEPS
    epochs: int | None = None
    imgsz: int | None = None  # None: the space's input size
    batch: int = 16
    device: str = "cpu"
    workers: int = 0          # DataLoader workers inside a trial
    # Proxy runs are a few epochs from scratch: AdamW at 0.01 learns fast enough to rank candidates
    # (3 epochs at 256 px on the synthetic set: a space sample reached mAP 0.19 at lr 0.01, the
    # GhostNetV2 baseline 0.014 at the trainer's fine-tuning default of 0.00125).
    lr: float | None = 0.01
    seed: int = 0

    def __post_init__(self):
        if self.epochs is not None:
            self.steps = None  # epochs given: they alone set the length


@dataclass
class SearchConfig:
    space: str
    budget_ms: float
    study: str
    storage: str
    trials: int = 50
    objective: str = "constrained"   # "constrained": max mAP s.t. latency <= budget; "pareto": (mAP, latency)
    sampler: str = "tpe"             # tpe | random | nsga2
    seed: int = 0
    pruner: str = DEFAULT_PRUNER     # median | sha | hyperband | none (nas.search.pruning)
    workers: int = 1                 # concurrent Ray trials
    cpus_per_trial: float | None = None  # None: sized to the cluster (nas.search.cluster)
    gpus_per_trial: float = 0.0
    address: str | None = None       # an existing Ray cluster
    latency: str = "predicted"       # predicted (per-block table) | measured (whole model)
    latency_backend: str | None = None  # onnxruntime on CPU by default
    latency_threads: int | None = None
    latency_device: str = "cpu"
    latency_cache: str | None = None  # folder of the per-target block tables (default: studies/latency)
    latency_target: str | None = None  # a device server's URL (nas device serve): timed there, not here
    latency_token_file: str | None = None  # its token (absolute path); else $NAS_DEVICE_TOKEN
    latency_table: str | None = None  # a portable table file (absolute path): its target, its blocks
    max_failures: int = 5            # consecutive failed trials that stop the search
    max_over_budget: int = 200       # consecutive over-budget candidates that stop it (nothing fits)
    measure_best: int = 3            # the best feasible candidates measured whole at the end (0: none)
    fidelity: Fidelity = field(default_factory=Fidelity)

    @property
    def folder(self) -> Path:
        """The study's own folder (lock, Ray's files; the SQLite storage by default)."""
        return STUDIES_DIR / check_study_name(self.study)

    @property
    def latency_folder(self) -> Path:
        """Where the latency tables live: shared by every study, so that each block is measured once
        per target (the table's file name names the machine) and each space calibrated once."""
        return Path(self.latency_cache) if self.latency_cache else STUDIES_DIR / "latency"

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self, space_hash: str) -> dict:
        """What this search is (IDENTITY_FLAGS' keys): stored with the study, compared on resume."""
        f = self.fidelity
        return {"space_hash": space_hash, "budget_ms": self.budget_ms, "objective": self.objective,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
                "data": f.data, "steps": f.steps, "epochs": f.epochs, "imgsz": f.imgsz, "batch": f.batch, "lr": f.lr,
                "latency": self.latency, "latency_device": self.latency_device,
                "latency_backend": self.latency_backend, "latency_threads": self.latency_threads,
                "latency_target": self.latency_target}

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        d = dict(d)
        if "prune" in d and "pruner" not in d:  # studies made before the pruner was a choice
            d["pruner"] = "median" if d["prune"] else "none"
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["fidelity"] = Fidelity(**d.get("fidelity", {}))
        return cls(**d)


def check_study_name(name: str) -> str:
    """A study name becomes a folder under studies/: no path separators, no '..', no surprises."""
    if not _STUDY_NAME.fullmatch(name) or ".." in name:
        raise UserError(f"study name {name!r}: use letters, digits, '.', '_' and '-' (no '/' or '..'), "
                        f"starting with a letter or digit, at most 128 characters")
    return name


def default_storage(study: str) -> str:
    return f"sqlite:///{STUDIES_DIR / check_study_name(study) / 'study.db'}"
