"""Choose the search's pruner by measurement: compute saved and best mAP kept, against --no-prune.

    python benchmarks/bench_pruner.py --seeds 0 1 --trials 10 --epochs 3 6 --json pruner.json
    python benchmarks/bench_pruner.py --from-study sqlite:///studies/s/study.db:s   # replay only

Cost: the no-prune searches (seeds x epochs settings, --parallel at a time); at the defaults (64 px,
256 synthetic images, one torch thread per trial) a 6-epoch search of 10 trials took ~1 h and a
3-epoch one ~35 min on a 2-core machine under load from other jobs. The replays take seconds.

Method: a replay, which is exact and cheap. For each seed and each --epochs setting, one real
search runs through the CLI with `--no-prune --workers 1` (`nas search SPACE --budget 1s ...`, in
--workdir, so its studies/ lands there; an existing study of the same name is reused, so a second
run of this benchmark replays at once). Every candidate then trains every epoch, and its learning
curve is in `trial.intermediate_values` (1-based epochs). For each pruner kind
(`nas.search.pruning.make_pruner(kind, E)`), those curves are replayed in trial order through a
fresh in-memory study, as the search's searcher and PruneStopper drive a live one: ask(), then
epoch by epoch report the mAP and ask should_prune(); the first yes is told PRUNED (it trained up
to that epoch), otherwise the trial is told COMPLETE with its final mAP. Candidates that were not
trained (over budget) are told COMPLETE without a curve and failed ones FAIL, so trial numbers and
the study name (Hyperband hashes both into its brackets) are those of the live search.

Reported per pruner and study: epochs trained (sum), compute saved against --no-prune (%, in
epochs, which machine load does not change; "time saved" weighs each trial's epochs by its own
measured seconds per epoch in the no-prune run, an estimate that load makes noisy), the best final
mAP among the trials the pruner let finish against the no-prune best (kept or not, mAP lost), where
the no-prune winner went (finished, or pruned at epoch k), the no-prune rank of the pruned search's
best (1 = the winner), and how many trials were pruned. The order in which a search meets its
candidates is arbitrary, so each study is also replayed in --orders random permutations of its
trials: "kept over orders" is the share of all (study, order) replays that kept the best mAP.

What a replay does not model: the sampler reacting to pruned trials. A live TPE search would sample
differently after a prune (a pruned trial counts as a trial, and TPE learns from its last reported
value), and with Hyperband Optuna's samplers only learn from the trial's own bracket. So a replay
measures the pruner's decisions on a fixed sequence of candidates. With `--workers 1` those
decisions are otherwise exactly those of a live search (same reports, same order, same trial
numbers); with several workers a live pruner sees fewer finished curves when it decides.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.search.pruning import make_pruner  # noqa: E402

CAVEAT = ("A replay does not model the sampler reacting to pruned trials (TPE would sample differently after a "
          "prune); with --workers 1 the pruning decisions are otherwise exactly those of a live search.")


@dataclass
class Event:
    """One trial of a no-prune study, as the replay feeds it to a pruner."""
    number: int
    kind: str                                   # "curve" (trained), "untrained" (over budget) or "fail"
    values: dict[int, float] = field(default_factory=dict)  # 1-based epoch -> mAP
    final: float = float("nan")                 # the COMPLETE value
    sec_per_epoch: float | None = None          # measured in the no-prune run (None: unknown)


@dataclass
class Source:
    """A no-prune study to replay."""
    name: str
    epochs: int
    events: list[Event]
    label: str = ""                             # e.g. "seed 0"


# -- reading a no-prune study ------------------------------------------------------------------------
def events_of(trials: list[FrozenTrial]) -> list[Event]:
    """The trials of a no-prune study in trial order. Raises ValueError on a pruned trial (its curve
    is cut short: replay a --no-prune study)."""
    events = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.PRUNED:
            raise ValueError(f"trial {t.number} was pruned: replay a study searched with --no-prune")
        if t.state == TrialState.FAIL:
            events.append(Event(t.number, "fail"))
        elif t.state == TrialState.COMPLETE:
            value = t.values[0]
            if t.intermediate_values:
                train_s, run = t.user_attrs.get("train_s"), t.user_attrs.get("epochs_run")
                spe = train_s / run if train_s and run else None
                events.append(Event(t.number, "curve", dict(t.intermediate_values), value, spe))
            else:
                events.append(Event(t.number, "untrained", final=value))
        # RUNNING / WAITING: not finished, not part of the search's record
    return events


def load_source(url: str, name: str, label: str = "") -> Source:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url)
    if len(study.directions) > 1:
        raise ValueError(f"{name}: a pareto study is never pruned; replay a constrained one")
    config = study.user_attrs.get("config", {})
    if config.get("prune", False):
        print(f"warning: {name} was searched with pruning on; only its unpruned curves are complete")
    events = events_of(study.get_trials(deepcopy=False))
    steps = [max(e.values) for e in events if e.kind == "curve"]
    epochs = config.get("fidelity", {}).get("epochs") or (max(steps) if steps else 0)
    return Source(name, int(epochs), events, label or name)


def parse_from_study(spec: str) -> tuple[str, str]:
    """'sqlite:///studies/x/study.db:x' -> (url, name): the name follows the last colon."""
    url, sep, name = spec.rpartition(":")
    if not sep or not url or not name or name.startswith("//"):
        raise argparse.ArgumentTypeError(f"--from-study {spec!r}: expected URL:NAME")
    return url, name


# -- the replay ------------------------------------------------------------------------------------------
def pruner_of(kind: str, epochs: int):
    """make_pruner(kind, epochs); "median@K" is the median pruner judging from epoch K on."""
    if kind.startswith("median@"):
        return make_pruner("median", epochs, warmup=int(kind.split("@", 1)[1]))
    return make_pruner(kind, epochs)


def replay(events: list[Event], kind: str, epochs: int, study_name: str) -> dict:
    """Feed `events` to a fresh study with make_pruner(kind, epochs), as a live --workers 1 search would."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=optuna.storages.InMemoryStorage(),
                                direction="maximize", pruner=pruner_of(kind, epochs),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    trained: dict[int, int] = {}  # event number -> epochs trained
    for ev in events:
        trial = study.ask()
        if ev.kind == "fail":
            study.tell(trial, state=TrialState.FAIL)
            continue
        if ev.kind == "untrained":
            study.tell(trial, ev.final)
            continue
        stopped = None
        for epoch in range(1, epochs + 1):
            # the searcher reports each epoch's mAP (a NaN is not reported), then the stopper asks
            v = ev.values.get(epoch)
            if v is not None and not math.isnan(v):
                trial.report(v, step=epoch)
            if trial.should_prune():
                stopped = epoch
                break
        if stopped is None:
            study.tell(trial, ev.final)
            trained[ev.number] = epochs
        else:
            study.tell(trial, state=TrialState.PRUNED)
            trained[ev.number] = stopped
    return score(events, trained, epochs)


def score(events: list[Event], trained: dict[int, int], epochs: int) -> dict:
    """Compare one replay (epochs trained per curve) with the no-prune search of the same trials."""
    curves = [e for e in events if e.kind == "curve" and not math.isnan(e.final)]
    full = epochs * len(curves)
    used = sum(trained[e.number] for e in curves)
    timed = all(e.sec_per_epoch for e in curves)
    full_s = sum(epochs * e.sec_per_epoch for e in curves) if timed else None
    used_s = sum(trained[e.number] * e.sec_per_epoch for e in curves) if timed else None
    ranking = sorted(curves, key=lambda e: -e.final)  # the no-prune order (ties: earlier trial first)
    winner = ranking[0] if ranking else None
    finished = [e for e in curves if trained[e.number] >= epochs]
    best = max(finished, key=lambda e: e.final, default=None)
    best_map = best.final if best else float("nan")
    kept = bool(winner and best and best.final >= winner.final)
    rank = 1 + sum(1 for e in ranking if best and e.final > best.final) if best else None
    return {"trials": len(curves), "epochs_full": full, "epochs_trained": used,
            "saved_pct": 100 * (1 - used / full) if full else 0.0,
            "time_saved_pct": 100 * (1 - used_s / full_s) if full_s else None,
            "best_noprune": winner.final if winner else float("nan"), "best_kept_map": best_map,
            "kept": kept, "lost": (winner.final - best_map) if winner and best else float("nan"),
            "winner_pruned_at": (trained[winner.number] if winner and trained[winner.number] < epochs else None),
            "best_rank": rank, "pruned": sum(1 for e in curves if trained[e.number] < epochs)}


def orders(events: list[Event], n: int, seed: int) -> list[list[Event]]:
    """`n` random permutations of a study's trials (reproducible: seeded by `seed`)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        perm = list(events)
        rng.shuffle(perm)
        out.append(perm)
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation (average ranks for ties); NaN when undefined."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    if len(xs) < 3:
        return float("nan")
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in rx)), math.sqrt(sum((b - my) ** 2 for b in ry))
    return sxy / (sx * sy) if sx and sy else float("nan")


def early_agreement(source: Source) -> list[float]:
    """Spearman between each epoch's mAP and the final mAP over the study's trained trials."""
    curves = [e for e in source.events if e.kind == "curve"]
    out = []
    for epoch in range(1, source.epochs):
        pairs = [(e.values[epoch], e.final) for e in curves if epoch in e.values]
        out.append(spearman([p[0] for p in pairs], [p[1] for p in pairs]))
    return out


def evaluate(sources: list[Source], pruners: list[str], n_orders: int) -> dict:
    """All replays: per source and pruner, in order and over `n_orders` permutations."""
    results = []
    for i, src in enumerate(sources):
        perms = orders(src.events, n_orders, seed=1000 + i)
        for kind in pruners:
            in_order = replay(src.events, kind, src.epochs, src.name)
            permuted = [replay(p, kind, src.epochs, src.name) for p in perms]
            results.append({"study": src.name, "label": src.label, "epochs": src.epochs, "pruner": kind,
                            "in_order": in_order, "orders": permuted})
    return {"results": results,
            "agreement": {s.name: early_agreement(s) for s in sources}}


def summarize(results: list[dict], epochs: int, kind: str) -> dict:
    rows = [r for r in results if r["epochs"] == epochs and r["pruner"] == kind]
    ins = [r["in_order"] for r in rows]
    perms = [p for r in rows for p in r["orders"]]
    missed = [p for p in perms if not p["kept"]]
    missed_in = [r for r in ins if not r["kept"]]
    timed = [r["time_saved_pct"] for r in ins if r["time_saved_pct"] is not None]

    def mean(v):
        return statistics.mean(v) if v else float("nan")
    return {"pruner": kind, "epochs": epochs, "studies": len(rows),
            "saved_in_order_pct": mean([r["saved_pct"] for r in ins]),
            "saved_orders_pct": mean([p["saved_pct"] for p in perms]),
            "saved_orders_range": ([min(p["saved_pct"] for p in perms), max(p["saved_pct"] for p in perms)]
                                   if perms else None),
            "time_saved_in_order_pct": mean(timed),
            "kept_in_order": sum(r["kept"] for r in ins),
            "kept_orders_pct": 100 * (len(perms) - len(missed)) / len(perms) if perms else float("nan"),
            "lost_when_missed": mean([p["lost"] for p in missed]),
            "lost_when_missed_rel_pct": mean([100 * p["lost"] / p["best_noprune"]
                                              for p in missed if p["best_noprune"]]),
            "lost_in_order": mean([r["lost"] for r in missed_in]),
            "pruned_in_order": mean([r["pruned"] for r in ins]),
            "pruned_orders": mean([p["pruned"] for p in perms]),
            "trials": mean([r["trials"] for r in ins])}


# -- running the no-prune searches ---------------------------------------------------------------------------
def study_name(epochs: int, seed: int) -> str:
    return f"bench-prune-e{epochs}-s{seed}"


def search_command(args, epochs: int, seed: int) -> list[str]:
    cmd = [sys.executable, "-m", "nas", "search", str(Path(args.space).resolve()), "--budget", args.budget,
           "--no-prune", "--trials", str(args.trials), "--seed", str(seed), "--study", study_name(epochs, seed),
           "--epochs", str(epochs), "--data", args.data, "--batch", str(args.batch), "--lr", str(args.lr),
           "--workers", "1", "--cpus-per-trial", str(args.cpus_per_trial), "--latency", args.latency,
           "--latency-threads", str(args.latency_threads)]
    if args.imgsz:
        cmd += ["--imgsz", str(args.imgsz)]
    if args.latency == "predicted":
        cmd += ["--latency-cache", str(Path(args.workdir).resolve() / "latency")]
    return cmd


def run_search(args, epochs: int, seed: int) -> dict:
    import os

    workdir = Path(args.workdir)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    cmd = search_command(args, epochs, seed)
    log = workdir / "logs" / f"{study_name(epochs, seed)}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] search: {' '.join(shlex.quote(c) for c in cmd)}  (log {log})", flush=True)
    with open(log, "a") as f:  # appended: a rerun that reuses the study keeps the first log
        rc = subprocess.run(cmd, cwd=workdir, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    print(f"[{time.strftime('%H:%M:%S')}] {study_name(epochs, seed)}: exit {rc}, {wall:.0f} s", flush=True)
    if rc != 0:
        raise SystemExit(f"search {study_name(epochs, seed)} failed (exit {rc}); see {log}")
    return {"study": study_name(epochs, seed), "epochs": epochs, "seed": seed, "wall_s": wall,
            "command": cmd}


def storage_of(args, name: str) -> str:
    return f"sqlite:///{(Path(args.workdir) / 'studies' / name / 'study.db').resolve()}"


# -- output ------------------------------------------------------------------------------------------------
def fmt(v, spec=".1f", none="-"):
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_tables(console, evaluation: dict, sources: list[Source], pruners: list[str], n_orders: int) -> dict:
    from rich.table import Table

    results = evaluation["results"]
    summaries = {}
    for epochs in sorted({s.epochs for s in sources}):
        srcs = [s for s in sources if s.epochs == epochs]
        trials = sum(sum(e.kind == "curve" for e in s.events) for s in srcs)
        table = Table(title=f"{epochs} epochs: {len(srcs)} no-prune searches, {trials} trained trials; "
                            f"in trial order and over {n_orders} random orders per search")
        for col in ("pruner", "compute saved (in order)", "over orders: mean [min, max]", "time saved (est.)",
                    "best kept (in order)", "best kept over orders", "mAP lost when not kept (rel.)",
                    "trials pruned (in order; orders)"):
            table.add_column(col, justify="right")
        for kind in pruners:
            s = summarize(results, epochs, kind)
            summaries.setdefault(str(epochs), {})[kind] = s
            rng = s["saved_orders_range"]
            table.add_row(kind, f"{fmt(s['saved_in_order_pct'])}%",
                          f"{fmt(s['saved_orders_pct'])}% [{fmt(rng[0], '.0f')}, {fmt(rng[1], '.0f')}]" if rng else "-",
                          f"{fmt(s['time_saved_in_order_pct'])}%",
                          f"{s['kept_in_order']}/{s['studies']}", f"{fmt(s['kept_orders_pct'], '.0f')}%",
                          f"{fmt(s['lost_when_missed'], '.4f')} ({fmt(s['lost_when_missed_rel_pct'], '.0f')}%)",
                          f"{fmt(s['pruned_in_order'])}; {fmt(s['pruned_orders'])} of {fmt(s['trials'], '.0f')}")
        console.print(table)

        detail = Table(title=f"{epochs} epochs, per search, in trial order")
        for col in ("search", "pruner", "epochs trained", "saved", "no-prune best", "pruned search's best",
                    "kept", "its no-prune rank", "winner", "pruned"):
            detail.add_column(col, justify="right")
        for src in srcs:
            for kind in pruners:
                r = next(x["in_order"] for x in results if x["study"] == src.name and x["pruner"] == kind)
                fate = "finished" if r["winner_pruned_at"] is None else f"pruned at epoch {r['winner_pruned_at']}"
                detail.add_row(src.label, kind, f"{r['epochs_trained']}/{r['epochs_full']}", f"{r['saved_pct']:.0f}%",
                               fmt(r["best_noprune"], ".4f"), fmt(r["best_kept_map"], ".4f"),
                               "yes" if r["kept"] else f"no (-{r['lost']:.4f})", fmt(r["best_rank"], "d"),
                               fate,
                               f"{r['pruned']}/{r['trials']}")
        console.print(detail)
        agree = [evaluation["agreement"][s.name] for s in srcs]
        if agree and agree[0]:
            per_epoch = []
            for i in range(epochs - 1):
                vals = [a[i] for a in agree if i < len(a) and not math.isnan(a[i])]
                per_epoch.append(f"epoch {i + 1}: {fmt(statistics.mean(vals) if vals else None, '.2f')}")
            console.print(f"rank agreement of early mAP with the final mAP (Spearman, mean over searches): "
                          f"{', '.join(per_epoch)}")
    return summaries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "spaces/ghost_yolo.yaml"))
    p.add_argument("--budget", default="1s", help="high enough that every candidate is trained (default 1s)")
    p.add_argument("--trials", type=int, default=10, help="trials per no-prune search")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, nargs="+", default=[3, 6], help="one search per seed and setting")
    p.add_argument("--data", default="synthetic:n=256,size=64")
    p.add_argument("--imgsz", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--cpus-per-trial", type=int, default=1,
                   help="torch threads per trial (1: on a busy machine a second thread mostly waits)")
    p.add_argument("--latency", choices=("measured", "predicted"), default="measured")
    p.add_argument("--latency-threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2, help="no-prune searches run at once (each --workers 1)")
    p.add_argument("--workdir", default="/tmp/nas-bench-pruner", help="the searches' cwd (their studies/, logs/)")
    p.add_argument("--from-study", action="append", type=parse_from_study, default=[], metavar="URL:NAME",
                   help="replay an existing no-prune study instead of running searches (repeatable)")
    p.add_argument("--pruners", nargs="+", default=["none", "median", "sha", "hyperband"],
                   help="pruner kinds replayed; median@K judges from epoch K (plain median: past half the proxy)")
    p.add_argument("--orders", type=int, default=20, help="random trial orders replayed per search")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()

    from rich.console import Console

    console = Console(width=max(Console().width, 200))  # a wide table, also when written to a log file
    console.print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}", soft_wrap=True, highlight=False)
    console.print(f"settings: {vars(args)}", soft_wrap=True, highlight=False)
    console.print(CAVEAT, soft_wrap=True, highlight=False)

    searches = []
    if args.from_study:
        sources = [load_source(url, name) for url, name in args.from_study]
    else:
        jobs = [(e, s) for e in args.epochs for s in args.seeds]
        started = time.perf_counter()
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:  # the longest searches first
            searches = list(pool.map(lambda job: run_search(args, *job), sorted(jobs, key=lambda j: -j[0])))
        console.print(f"searches done in {time.perf_counter() - started:.0f} s", highlight=False)
        sources = [load_source(storage_of(args, study_name(e, s)), study_name(e, s), f"seed {s}") for e, s in jobs]
    for src in sources:
        if src.epochs < 1 or not any(e.kind == "curve" for e in src.events):
            raise SystemExit(f"{src.name}: no trained trial to replay")

    evaluation = evaluate(sources, args.pruners, args.orders)
    summaries = print_tables(console, evaluation, sources, args.pruners, args.orders)
    if args.json:
        figures = {"command": ["python", *sys.argv], "args": {k: v for k, v in vars(args).items()},
                   "caveat": CAVEAT, "searches": searches, "summaries": summaries, **evaluation,
                   "curves": {s.name: [asdict(e) for e in s.events] for s in sources}}
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
