"""What the search tests share: a tiny space, fast proxy settings, and reading a study back."""
import sqlite3
from contextlib import closing
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


def load_when_written(db: Path, name: str) -> optuna.Study | None:
    """The study in a running search's SQLite file, or None until the driver has created it.

    Opening the file with Optuna while the driver is still setting it up would run Optuna's set-up
    a second time, racing the driver's ("table ... already exists", or the driver failing on
    "UNIQUE constraint failed: alembic_version"): so look, read only, for the study's row, which
    the driver writes only once its storage is set up, and open the study only then."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            if not con.execute("SELECT count(*) FROM studies WHERE study_name = ?", (name,)).fetchone()[0]:
                return None
    except sqlite3.OperationalError:  # no such table yet, or the file is locked mid-write
        return None
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
