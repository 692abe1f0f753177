"""Everything a search needs to know, in one serialisable record stored with the study.

`nas resume STUDY` rebuilds the search from this record, so a resumed study keeps its space,
budget, target and fidelity even if the user forgets a flag.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

STUDIES_DIR = Path("studies")


@dataclass
class Fidelity:
    """How each candidate is proxy-trained and scored."""
    data: str = "synthetic"
    epochs: int = 3
    imgsz: int | None = None  # None: the space's input size
    batch: int = 16
    device: str = "cpu"
    workers: int = 0          # DataLoader workers inside a trial
    # Proxy runs are a few epochs from scratch: AdamW at 0.01 learns fast enough to rank candidates
    # (3 epochs at 256 px on the synthetic set: a space sample reached mAP 0.19 at lr 0.01, the
    # GhostNetV2 baseline 0.014 at the trainer's fine-tuning default of 0.00125).
    lr: float | None = 0.01
    seed: int = 0


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
    prune: bool = True
    workers: int = 1                 # concurrent Ray trials
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None       # an existing Ray cluster
    latency: str = "predicted"       # predicted (per-block table) | measured (whole model)
    latency_backend: str | None = None  # onnxruntime on CPU by default
    latency_threads: int | None = None
    latency_device: str = "cpu"
    latency_cache: str | None = None  # folder of the per-target block tables (default: studies/latency)
    max_failures: int = 5            # consecutive failed trials that stop the search
    fidelity: Fidelity = field(default_factory=Fidelity)

    @property
    def folder(self) -> Path:
        return STUDIES_DIR / self.study

    @property
    def latency_folder(self) -> Path:
        """Where the latency tables live: shared by every study, so that each block is measured once
        per target (the table's file name names the machine) and each space calibrated once."""
        return Path(self.latency_cache) if self.latency_cache else STUDIES_DIR / "latency"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["fidelity"] = Fidelity(**d.get("fidelity", {}))
        return cls(**d)


def default_storage(study: str) -> str:
    return f"sqlite:///{STUDIES_DIR / study / 'study.db'}"
