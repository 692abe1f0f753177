"""Search overhead and search quality.

    python benchmarks/bench_search.py --trials 12 --seeds 0 1 --budget 15ms [--steps 64 | --epochs 3]

For each sampler (TPE, random) and seed, runs a search of N trials on the built-in synthetic data
(studies under --studies, default /tmp/nas-bench-studies) and reports:
- overhead: search wall time not spent inside trials (the workers' own timing), per trial, and
  as a share of the mean trial time (goal <= 3%). Split into what is paid once per search (Ray
  start-up and shut-down: "start+stop") and per trial: the driver's work on each candidate
  (sampling, params/FLOPs, the latency check, which times the blocks its table has not seen yet)
  and the search machinery (Ray scheduling, Optuna, storage, display). The predictor's one-time
  calibration is timed apart, before the searches, which then share its table;
- quality: best feasible proxy mAP after N trials, TPE against random search on the same seeds,
  and against the hand-designed baseline (GhostNetV2 backbone + the reference neck, width scaled
  down until it fits the budget) trained with the same proxy fidelity.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cache_dir(args) -> Path:
    return Path(args.studies) / "latency-cache"


def table_size(args) -> int:
    """Blocks in the shared latency tables."""
    return sum(len(json.loads(f.read_text())["blocks"]) for f in cache_dir(args).glob("latency-*.json"))


def prepare_table(args) -> float:
    """Calibrate the latency predictor of the target once, as the first search would (seconds)."""
    from evaluators.data import load_dataset
    from nas.search.latency import LatencyOracle
    from nas.space import load_space

    space = load_space(args.space)
    nc = load_dataset(args.data, "val", imgsz=64, cache=False).nc
    oracle = LatencyOracle("predicted", "cpu", None, args.threads, cache_dir(args), space, nc, args.seeds[0])
    start = time.perf_counter()
    oracle.prepare(space.random_arch(args.seeds[0], nc)["imgsz"])
    return time.perf_counter() - start


def run_one(args, sampler: str, seed: int) -> dict:
    import optuna

    import nas.search.config as config
    from evaluators.budget import parse_budget
    from nas.search.config import Fidelity, SearchConfig
    from nas.search.driver import run_search
    from nas.search.study import best_feasible

    config.STUDIES_DIR = Path(args.studies)
    name = f"bench-{sampler}-s{seed}-{args.budget}"
    cfg = SearchConfig(space=args.space, budget_ms=parse_budget(args.budget), study=name,
                       storage=f"sqlite:///{Path(args.studies).resolve() / name / 'study.db'}", trials=args.trials,
                       sampler=sampler, seed=seed, workers=args.workers, cpus_per_trial=args.cpus_per_trial,
                       latency_threads=args.threads, latency_cache=str(cache_dir(args)),
                       fidelity=Fidelity(data=args.data, steps=args.steps, epochs=args.epochs, imgsz=args.imgsz,
                                         batch=args.batch, lr=args.lr, seed=seed))
    blocks_before = table_size(args)
    started = time.time()
    run_search(cfg)
    ended = time.time()
    study = optuna.load_study(study_name=name, storage=cfg.storage)
    best = best_feasible(study)
    return {"sampler": sampler, "seed": seed, "trials": len(study.trials),
            "trained": sum(bool(t.user_attrs.get("trained")) for t in study.trials),
            **timing(study.trials, started, ended, args.workers),
            "blocks_measured": table_size(args) - blocks_before,
            "best_map": best.values[0] if best else None,
            "best_latency_ms": best.user_attrs["latency_ms"] if best else None}


def timing(trials: list, started: float, ended: float, workers: int) -> dict:
    """Where a search's wall time went, from the trials it ran (all NaN if it ran none).

    A resumed study holds trials of earlier runs: only those started in [started, ended] are timed.
    """
    wall = ended - started
    trials = [t for t in trials if t.datetime_start and started <= t.datetime_start.timestamp() <= ended]
    n = len(trials)
    if not n:
        keys = ("inside_trials_s", "mean_trial_s", "overhead_per_trial_s", "start_stop_s", "per_trial_s",
                "machinery_per_trial_s", "candidate_per_trial_s", "latency_check_per_trial_s",
                "latency_wait_per_trial_s")
        return {"timed_trials": 0, "wall_s": wall, **dict.fromkeys(keys, float("nan")),
                "blocks_per_trial_halves": [float("nan")] * 2}
    trained = [t for t in trials if t.user_attrs.get("trained") and "train_s" in t.user_attrs]
    inside = sum(t.user_attrs["train_s"] for t in trained)
    # Once per search: before the first trial (storage, Ray start-up) and after the last (Ray
    # shut-down, summary). The first trial's worker process start-up (~3 s) counts per trial.
    start_stop = (min(t.datetime_start.timestamp() for t in trials) - started
                  + ended - max(t.datetime_complete.timestamp() for t in trials))
    # The driver's own work on each candidate: sampling, params/FLOPs, the latency check (which
    # measures blocks the table has not seen yet). The rest of the time outside the trials is the
    # search machinery: Ray scheduling, Optuna ask/tell, storage, progress display.
    candidates = sum(t.user_attrs.get("driver_s", 0.0) for t in trials)
    latency = sum(t.user_attrs.get("latency_s", 0.0) for t in trials)
    waited = sum(t.user_attrs.get("latency_wait_s", 0.0) for t in trials)  # the machine was busy
    blocks = [t.user_attrs.get("latency_blocks", 0) for t in trials]
    # with W workers, W trials overlap: the time outside trials is wall - inside / W
    outside = wall - inside / workers
    return {"timed_trials": n, "wall_s": wall,
            "inside_trials_s": inside, "mean_trial_s": inside / max(1, len(trained)),
            "overhead_per_trial_s": outside / n,
            "start_stop_s": start_stop,
            "per_trial_s": (outside - start_stop) / n,
            "machinery_per_trial_s": (outside - start_stop - candidates) / n,
            "candidate_per_trial_s": candidates / n,
            "latency_check_per_trial_s": latency / n,
            "latency_wait_per_trial_s": waited / n,
            # the table fills as the search goes: new blocks per candidate, first half and second half
            "blocks_per_trial_halves": [statistics.mean(blocks[:max(1, n // 2)]), statistics.mean(blocks[n // 2:])]}


def baseline_arch(width: float, nc: int, imgsz: int = 320) -> dict:
    """The hand-designed detector at `width`: GhostNetV2 backbone + the reference neck."""
    from nas.models import ghostnet_yolo

    return ghostnet_yolo(2, width, nc=nc, imgsz=imgsz, neck_widths=(64, 128, 256), head_width=64)


def scaled_baseline(budget_ms: float, nc: int, threads: int | None, imgsz: int = 320) -> tuple | None:
    """The hand-designed detector at the budget: GhostNetV2 backbone + the reference neck, its width
    scaled down until it measures under `budget_ms`, in the best of 3 passes (as the winners it is compared
    with: a burst of other work on a shared machine must not shrink it). (width, arch, ms), or None if
    even 0.25x is over."""
    from evaluators.latency import measure_latency
    from nas.models import build_model

    for width in [1.0, 0.9, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25]:
        arch = baseline_arch(width, nc, imgsz)
        model = build_model(arch)
        ms = min(measure_latency(model, imgsz, threads=threads).median_ms for _ in range(3))
        print(f"baseline width {width}: {ms:.2f} ms", flush=True)
        if ms <= budget_ms:
            return width, arch, ms
    return None


def baseline(args) -> dict:
    """The scaled baseline, trained like a candidate."""
    import torch

    from evaluators.budget import parse_budget
    from evaluators.data import load_dataset
    from evaluators.train import train
    from nas.models import build_model

    nc = load_dataset(args.data, "val", imgsz=64, cache=False).nc
    chosen = scaled_baseline(parse_budget(args.budget), nc, args.threads)
    if chosen is None:
        return {"width": None, "note": "even width 0.25 is over budget"}
    width, arch, ms = chosen
    torch.manual_seed(0)
    torch.set_num_threads(max(1, int(args.cpus_per_trial)))  # as a search trial would
    result = train(build_model(arch), data=args.data, steps=args.steps, epochs=args.epochs,
                   imgsz=args.imgsz or arch["imgsz"], batch=args.batch, lr=args.lr, seed=0)
    return {"width": width, "latency_ms": ms, "map": result.final["map"], "map50": result.final["map50"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "spaces/ghost_yolo.yaml"))
    p.add_argument("--budget", default="15ms")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--samplers", nargs="*", default=["tpe", "random"], help="none: the baseline only")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--steps", type=int, default=None, help="proxy optimizer steps (default: the search's)")
    p.add_argument("--epochs", type=int, default=None, help="proxy epochs instead of steps")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01, help="proxy learning rate, searches and baseline alike")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus-per-trial", type=float, default=2)
    p.add_argument("--threads", type=int, default=None, help="latency threads (default: all physical cores)")
    p.add_argument("--studies", default="/tmp/nas-bench-studies")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    if args.steps is None and args.epochs is None:
        from nas.search.config import DEFAULT_STEPS

        args.steps = DEFAULT_STEPS

    from rich.console import Console
    from rich.table import Table

    setup_s = prepare_table(args) if args.samplers else 0.0
    runs = [run_one(args, s, seed) for s in args.samplers for seed in args.seeds]
    base = None if args.no_baseline else baseline(args)

    def pct(seconds: float, r: dict) -> str:
        return f"{100 * seconds / r['mean_trial_s']:.1f}%" if r["mean_trial_s"] else "-"

    # Per trial (over-budget ones included), as a share of the mean time inside a trained trial.
    table = Table(title=f"search: {args.trials} trials, budget {args.budget}, "
                        f"{f'{args.epochs} epochs' if args.epochs else f'{args.steps} steps'}, {args.data}; "
                        f"one-time predictor calibration {setup_s:.0f} s")
    for col in ("sampler", "seed", "trained", "best mAP", "@ ms", "mean trial s", "start+stop s",
                "driver s/trial", "latency check s/trial (waiting)", "new blocks/trial (1st, 2nd half)",
                "machinery s/trial", "per trial s", "all outside s/trial"):
        table.add_column(col, justify="right")
    for r in runs:
        halves = r["blocks_per_trial_halves"]
        table.add_row(r["sampler"], str(r["seed"]), f"{r['trained']}/{r['trials']}",
                      f"{r['best_map']:.4f}" if r["best_map"] is not None else "-",
                      f"{r['best_latency_ms']:.2f}" if r["best_latency_ms"] else "-", f"{r['mean_trial_s']:.1f}",
                      f"{r['start_stop_s']:.1f}",
                      f"{r['candidate_per_trial_s']:.2f} ({pct(r['candidate_per_trial_s'], r)})",
                      f"{r['latency_check_per_trial_s']:.2f} ({pct(r['latency_check_per_trial_s'], r)}) "
                      f"({r['latency_wait_per_trial_s']:.2f})",
                      f"{halves[0]:.1f}, {halves[1]:.1f}",
                      f"{r['machinery_per_trial_s']:.2f} ({pct(r['machinery_per_trial_s'], r)})",
                      f"{r['per_trial_s']:.2f} ({pct(r['per_trial_s'], r)})",
                      f"{r['overhead_per_trial_s']:.2f} ({pct(r['overhead_per_trial_s'], r)})")
    console = Console(width=max(Console().width, 200))  # a wide table, also when written to a log file
    console.print(table)
    for s in args.samplers:
        maps = [r["best_map"] or 0.0 for r in runs if r["sampler"] == s]
        console.print(f"{s}: mean best mAP {statistics.mean(maps):.4f} over seeds {args.seeds}")
    if base:
        console.print(f"baseline GhostNetV2 x{base.get('width')}: {base}")
    if args.json:
        figures = {"args": vars(args), "setup_s": setup_s, "runs": runs, "baseline": base}
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
