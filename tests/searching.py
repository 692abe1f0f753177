"""What the search tests share: a tiny space, fast proxy settings, and reading a study back."""
from pathlib import Path

import optuna

SPACE = Path(__file__).resolve().parent / "data" / "tiny_space.yaml"
# 64 px, 16 training images, measured latency (no calibration): a trial takes a few seconds
FAST = ["--data", "synthetic:n=16,val=8,size=64", "--epochs", "2", "--imgsz", "64", "--batch", "8",
        "--latency", "measured"]


def storage(name: str) -> str:
    return f"sqlite:///studies/{name}/study.db"


def load(name: str) -> optuna.Study:
    """The study as the storage holds it (run in the search's working folder)."""
    return optuna.load_study(study_name=name, storage=storage(name))
