"""What the user sees while searching: one live status line, and a summary table at the end."""
from __future__ import annotations

import math
import time

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .study import trial_kind


def counts(study: optuna.Study) -> dict:
    """Trials by what they mean to the search. `evaluated` (trained to the end + pruned) is what
    --trials counts; over-budget candidates are recorded but never trained."""
    c = {s: 0 for s in ("trained", "over_budget", "pruned", "failed", "running", "waiting")}
    for t in study.get_trials(deepcopy=False):
        c[trial_kind(t)] += 1
    c["evaluated"] = c["trained"] + c["pruned"]
    return c


def counts_line(c: dict, target) -> str:
    """The same words on the live line, in the summary and in `nas status`."""
    return (f"evaluated {c['evaluated']}/{target} ({c['trained']} trained, {c['pruned']} pruned)  "
            f"over budget {c['over_budget']} (not counted)  failed {c['failed']}")


class Progress:
    """A live line: done/target, feasible, pruned, failed, running, best mAP @ latency, ETA."""

    def __init__(self, study: optuna.Study, target: int, workers: int, console: Console | None = None):
        self.study, self.target, self.workers = study, target, workers
        self.console = console or Console(stderr=True)
        self.start, self.start_done = time.perf_counter(), None
        self.live = Live(console=self.console, refresh_per_second=2, transient=False)

    def __enter__(self):
        self.live.__enter__()
        self.update()
        return self

    def __exit__(self, *exc):
        self.update()
        self.live.__exit__(*exc)
        if not self.console.is_terminal:
            self.console.line()  # piped output: end the status line before the summary table

    def update(self) -> None:
        from .study import best_feasible

        c = counts(self.study)
        if self.start_done is None:
            self.start_done = c["evaluated"]
        best = best_feasible(self.study)
        best_txt = (f"best mAP [bold]{best.values[0]:.4f}[/] @ {best.user_attrs.get('latency_ms', math.nan):.2f} ms "
                    f"(#{best.number})" if best else "no feasible trial yet")
        elapsed = time.perf_counter() - self.start
        new = c["evaluated"] - self.start_done
        left = self.target - c["evaluated"]
        eta = f"ETA {_duration(elapsed / new * left)}" if new > 0 and left > 0 else ""
        self.live.update(f"[cyan]{counts_line(c, self.target)}[/]  running {c['running']}  |  {best_txt}  {eta}")


def _duration(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


def trials_table(study: optuna.Study, limit: int | None = None) -> Table:
    """Trials best first: trained by mAP, then pruned (by their last mAP), over-budget and failed ones."""
    trials = study.get_trials(deepcopy=False)
    order = {"trained": 0, "pruned": 1, "over_budget": 2}

    def rank(t):
        mAP = t.user_attrs.get("map")
        return (order.get(trial_kind(t), 3), -(mAP if isinstance(mAP, float) and not math.isnan(mAP) else -1),
                t.number)

    table = Table(title_justify="left", pad_edge=False)
    for col, just in (("#", "right"), ("state", "left"), ("mAP", "right"), ("mAP50", "right"), ("ms", "right"),
                      ("params", "right"), ("GFLOPs", "right"), ("ep", "right"), ("s", "right"),
                      ("note", "left")):
        table.add_column(col, justify=just, no_wrap=col != "note")
    for t in sorted(trials, key=rank)[:limit]:
        a = t.user_attrs
        state = t.state.name.lower()
        if t.state == TrialState.COMPLETE:
            state = "feasible" if trial_kind(t) == "trained" else "over"
        table.add_row(str(t.number), state, _f(a.get("map") if t.state != TrialState.COMPLETE else t.values[0], 4),
                      _f(a.get("map50"), 4), _f(a.get("latency_ms"), 2),
                      f"{a['params'] / 1e6:.2f}M" if "params" in a else "", _f(a.get("flops", math.nan) / 1e9, 2),
                      str(a.get("epochs_run", "")), _f(a.get("wall_s"), 0),
                      _cut(a.get("fail_reason", ""), 48) or (f"re-run of #{a['rerun_of']}" if "rerun_of" in a else ""))
    return table


def _cut(text: str, n: int) -> str:
    """The table's note: the start of a reason (the whole one is in the study)."""
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def _f(v, digits: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"
