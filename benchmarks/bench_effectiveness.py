"""Search effectiveness: do the search's winners beat random search and the hand-designed baseline
after a long training, at no more measured latency?

    python benchmarks/bench_effectiveness.py --budget 15ms --trials 10 --seeds 0 1 2 --imgsz 128

1. For each sampler (constrained TPE, random) and seed: a real search (`run_search`, Ray, the
   default pruner) of `--trials` evaluated candidates at the default proxy (`--steps`) on the
   built-in set; the winner is what `nas export` would write.
2. The baseline: GhostNetV2 backbone + reference neck, width scaled down until it measures under
   the budget (benchmarks/bench_search.py), proxy-trained like a candidate.
3. Every winner and the baseline trained at the long fidelity (`--long-steps`, default 5x the
   proxy, two at a time with one thread each) on each of `--long-seeds`, seeds no search's proxy
   used (a proxy on the long run's seed starts from its weights and sees its images: it is
   flattered, bench_fidelity measured), then measured whole (onnxruntime, this CPU, the best of 5
   passes over them all). A detector's long mAP is the mean over the long seeds; its gain over the
   baseline is paired by seed (same initial-weight seed and image order), with its range.
   `--reference-widths` adds the hand-designed detector at other widths (e.g. the first that
   missed the budget by a hair), long-trained beside the others and never searched: how much of a
   gain over the baseline is the width scan's coarse step? They are timed only on the processor
   the state was measured on.
   Results go to OUT/effectiveness.json after each step: a rerun resumes.
   A rerun with a larger --trials resumes each search (its study keeps its trials) and retrains
   only winners that changed (a replaced winner stays in the state, under its search's `earlier`,
   with its long runs: the shorter search is compared from the same file); another --long-steps
   or more --long-seeds trains only the runs missing. Long training alone may run on another processor than the one that searched and timed
   (mAP does not depend on it; each long run records where it ran); searching and timing may not.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


MEASURE_PASSES = 5  # whole-model latency passes over the winners and the baseline, the smallest kept


def interleaved_passes(models: dict, time_one, passes: int = MEASURE_PASSES) -> dict[str, list[float]]:
    """Each model's times from `passes` passes over all of them (`time_one(key, model)` -> ms), so
    that a slow spell lasting one detector's timings inflates one pass of several, not all of one."""
    times = {k: [] for k in models}
    for _ in range(passes):
        for k, model in models.items():
            times[k].append(time_one(k, model))
    return times


def long_train(arch: dict, data: str, steps: int, imgsz: int, batch: int, lr: float, seed: int) -> dict:
    """One training of `steps` on `seed` (in a worker process, one thread)."""
    import torch

    from evaluators.train import train
    from nas.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = train(build_model(arch), data=data, steps=steps, imgsz=imgsz, batch=batch, lr=lr, seed=seed,
                   val_every=10_000)
    return {"map": result.final["map"], "map50": result.final["map50"], "epochs": result.epochs_run,
            "steps": steps, "seed": seed, "time_s": time.perf_counter() - start}


def stamp_long_runs(state: dict) -> dict:
    """Put every long run in its detector's `long_runs` list with its length and seed, and return the
    arguments the state was saved with.

    Older states hold one run under `long`, some without its steps or seed: those ran at the
    --long-steps of the arguments saved beside them (which this run's are about to replace), on the
    saved --long-seed, or on seed 0 before there was one."""
    before = state["args"]
    for v in [*state["searches"].values(), state.get("baseline", {})]:
        if "long" in v:
            run = v.pop("long")
            run.setdefault("steps", before["long_steps"])
            run.setdefault("seed", before.get("long_seed", 0))
            v.setdefault("long_runs", []).append(run)
    return before


def long_run(entry: dict, steps: int, seed: int) -> dict | None:
    """This winner's (or the baseline's) long training at `steps` on `seed`, if it has one."""
    return next((r for r in entry.get("long_runs", []) if r["steps"] == steps and r["seed"] == seed), None)


def long_done(entry: dict, steps: int, seed: int) -> bool:
    return long_run(entry, steps, seed) is not None


def long_maps(entry: dict, steps: int, seeds: list[int]) -> list[float]:
    """Long mAP on each of `seeds`, in their order (every one must be trained)."""
    return [long_run(entry, steps, seed)["map"] for seed in seeds]


def gain_points(entry: dict, baseline: dict, steps: int, seeds: list[int]) -> list[float]:
    """mAP points over the baseline, paired by long seed: both started from the same seed's weights
    and saw the same images in the same order, so the seed's luck cancels in part."""
    return [100 * (a - b) for a, b in zip(long_maps(entry, steps, seeds), long_maps(baseline, steps, seeds))]


def earlier_winners(entry: dict, steps: int, seeds: list[int]) -> str:
    """A search's earlier winners, as "after TRIALS: #TRIAL LONG-MAP-MEAN" (the mean over `seeds`
    where each was trained, "-" where not): what a longer search bought over its shorter self."""
    def mean_long(e: dict) -> str:
        runs = [long_run(e, steps, seed) for seed in seeds]
        return f"{statistics.mean(r['map'] for r in runs):.4f}" if all(runs) else "-"

    return ", ".join(f"after {e['trials_wanted']}: #{e['trial']} {mean_long(e)}" for e in entry.get("earlier", []))


def missing_long_runs(entries: dict, steps: int, seeds: list[int]) -> list[tuple[str, int]]:
    """(detector, seed) of every long training not yet done, seed by seed."""
    return [(k, seed) for seed in seeds for k, v in entries.items() if not long_done(v, steps, seed)]


def reference_key(width: float) -> str:
    return f"GhostNetV2 x{width:g}"


def add_references(state: dict, widths: list[float]) -> list[str]:
    """The hand-designed detector at each of `widths`, for the baseline's classes (kept in the state
    once added: its long runs stand); returns their keys, in the order asked."""
    from bench_search import baseline_arch

    refs = state.setdefault("references", {})
    for width in widths:
        refs.setdefault(reference_key(width), {"width": width,
                                               "arch": baseline_arch(width, state["baseline"]["arch"]["nc"])})
    return [reference_key(width) for width in widths]


def searched(state: dict, before: dict, key: str, trials: int) -> bool:
    """Whether the search `key` has run to `trials` evaluated candidates (a larger --trials resumes it)."""
    v = state["searches"].get(key)
    return v is not None and v.get("trials_wanted", before["trials"]) >= trials


MEASURED = ("long_runs", "measured_ms", "measured_passes_ms")  # what a winner keeps while it stays one


def same_detector(a: dict | None, b: dict | None) -> bool:
    """Whether two exported architectures build the same detector: all but `meta`, the provenance
    that changes as the study learns more of the trial (e.g. its whole-model measurement)."""
    def strip(arch):
        return {k: v for k, v in arch.items() if k != "meta"} if arch else arch
    return strip(a) == strip(b)


def resumed_entry(old: dict, new: dict) -> dict:
    """A search's entry after it ran to more trials: `new`, its winner now. A winner that stayed keeps
    its long runs and latency; one that was replaced moves, with what was measured of it, to `earlier`
    (so one state compares a search with its shorter self); a winner that comes back (e.g. the one a
    measurement over budget fell back to) gets its long runs back rather than training them again."""
    if not old:
        return new
    earlier = list(old.pop("earlier", []))
    if same_detector(old.get("arch"), new["arch"]):
        new.update({k: old[k] for k in MEASURED if k in old})
    else:
        earlier.append(old)
        again = next((e for e in reversed(earlier) if same_detector(e.get("arch"), new["arch"])), None)
        if again and "long_runs" in again:  # latency is measured again, beside the others
            new["long_runs"] = [dict(r) for r in again["long_runs"]]
    return {**new, "earlier": earlier} if earlier else new


def times_here(state: dict, before: dict, keys: list[str], trials: int, remeasure: bool) -> bool:
    """Whether this run would search or time anything: latency is only comparable on one processor,
    so only then must it be the processor the state was measured on."""
    return (remeasure or "baseline" not in state or not all(searched(state, before, k, trials) for k in keys)
            or any("measured_ms" not in v for v in state["searches"].values() if v.get("arch")))


def winner(args, sampler: str, seed: int) -> dict:
    import optuna

    from bench_search import run_one
    from nas.search.export import trial_arch
    from nas.search.study import best_feasible

    run = run_one(args, sampler, seed)
    name = f"bench-{sampler}-s{seed}-{args.budget}"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{Path(args.studies).resolve() / name / 'study.db'}")
    best = best_feasible(study)
    return {**run, "arch": trial_arch(study, best) if best else None, "trial": best.number if best else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "spaces/ghost_yolo.yaml"))
    p.add_argument("--budget", default="15ms")
    p.add_argument("--trials", type=int, default=10, help="evaluated candidates per search")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data", default="synthetic")
    p.add_argument("--steps", type=int, default=None, help="proxy optimizer steps (default: the search's)")
    p.add_argument("--long-steps", type=int, default=None, help="long training (default: 5x --steps)")
    p.add_argument("--long-seeds", type=int, nargs="+", default=[3],
                   help="the long trainings' seeds, none of --seeds (more seeds: an interval on each gain)")
    p.add_argument("--reference-widths", type=float, nargs="+", default=[], metavar="W",
                   help="also long-train the hand-designed detector at these widths (never searched; e.g. the "
                        "first width over the budget), to bound what the width scan's step costs the baseline")
    p.add_argument("--imgsz", type=int, default=128, help="training size (latency is at the space's size)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--threads", type=int, default=None, help="latency threads (default: all physical cores)")
    p.add_argument("--median-from", type=int, default=None, metavar="EPOCH",
                   help="the median pruner judges from this epoch (default: the search's rule, past half the "
                        "proxy); to extend studies searched under an earlier rule by the same rule")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the winners' and the baseline's latency again (on a quieter machine)")
    p.add_argument("--studies", default="/tmp/nas-effectiveness")
    p.add_argument("--out", default="runs/effectiveness")
    args = p.parse_args()
    shared = sorted(set(args.long_seeds) & set(args.seeds))
    if shared:
        p.error(f"--long-seeds {shared[0]} is a search's seed: its proxy would share the long run's weights "
                "and images (pick seeds outside --seeds)")
    if any(not 0 < w <= 2 for w in args.reference_widths):
        p.error("--reference-widths are width multipliers of the hand-designed detector, in (0, 2]")
    args.long_seeds = list(dict.fromkeys(args.long_seeds))
    from nas.search.config import DEFAULT_STEPS

    args.steps = args.steps or DEFAULT_STEPS
    args.epochs = None
    args.long_steps = args.long_steps or 5 * args.steps
    if args.median_from:  # the pruner lives in this process (the driver): every search here uses the rule
        import nas.search.pruning as pruning

        pruning.median_warmup = lambda epochs: args.median_from

    from rich.console import Console
    from rich.table import Table

    from bench_search import prepare_table, scaled_baseline
    from evaluators.budget import parse_budget
    from evaluators.data import load_dataset
    from evaluators.latency import cpu_name, measure_latency
    from nas.models import build_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "effectiveness.json"
    state = json.loads(path.read_text()) if path.exists() else {"args": vars(args), "processor": cpu_name(),
                                                                    "searches": {}}
    before = stamp_long_runs(state)
    keys = [(sampler, seed) for sampler in ("tpe", "random") for seed in args.seeds]
    measured_here = state.get("processor", cpu_name()) == cpu_name()  # latencies are only comparable on one
    if not measured_here and times_here(
            state, before, [f"{sampler}-{seed}" for sampler, seed in keys], args.trials, args.remeasure):
        print(f"{path} was measured on {state['processor']}, this is {cpu_name()}: searching or timing here would "
              "mix processors (use another --out; long training alone may run here)", file=sys.stderr)
        sys.exit(2)
    state["args"] = vars(args)

    def save():
        path.write_text(json.dumps(state, indent=1))

    # 1. the searches; a larger --trials resumes them (a search's study keeps its trials)
    def done(key: str) -> bool:
        return searched(state, before, key, args.trials)

    if not all(done(f"{sampler}-{seed}") for sampler, seed in keys) and "calibration_s" not in state:
        state["calibration_s"] = prepare_table(args)
    for sampler, seed in keys:
        key = f"{sampler}-{seed}"
        if not done(key):
            new = {**winner(args, sampler, seed), "trials_wanted": args.trials}
            state["searches"][key] = resumed_entry(state["searches"].get(key, {}), new)
            save()
    # 2. the baseline at the budget, proxy-trained like a candidate
    if "baseline" not in state:
        nc = load_dataset(args.data, "val", imgsz=64, cache=False).nc
        width, arch, ms = scaled_baseline(parse_budget(args.budget), nc, args.threads)
        proxy = long_train(arch, args.data, args.steps, args.imgsz, args.batch, args.lr, seed=0)
        state["baseline"] = {"width": width, "arch": arch, "latency_ms": ms, "best_map": proxy["map"]}
        save()
    refs = {k: state["references"][k] for k in add_references(state, args.reference_widths)}
    save()
    # 3. long training of every winner, the baseline and the references on every long seed, two at a time
    entries = {k: v for k, v in state["searches"].items() if v["arch"]} | {"baseline": state["baseline"]} | refs
    todo = missing_long_runs(entries, args.long_steps, args.long_seeds)
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = {(k, seed): pool.submit(long_train, entries[k]["arch"], args.data, args.long_steps, args.imgsz,
                                          args.batch, args.lr, seed) for k, seed in todo}
        for (k, seed), f in futures.items():
            run = {**f.result(), "processor": cpu_name()}
            entries[k].setdefault("long_runs", []).append(run)
            print(f"{k}: long mAP {run['map']:.4f} on seed {seed}", flush=True)
            save()
    # measured whole on an otherwise idle machine, in passes over all of them (each keeps its smallest):
    # a slow spell of a shared host then inflates one pass of each, not every pass of one detector
    # elsewhere only references can be unmeasured (the rest was refused above): they stay untimed
    unmeasured = {k: build_model(v["arch"]) for k, v in entries.items()
                  if (args.remeasure or "measured_ms" not in v) and (measured_here or k not in refs)}
    passes = interleaved_passes(unmeasured, lambda k, model: measure_latency(
        model, entries[k]["arch"]["imgsz"], threads=args.threads).median_ms)
    for k, times in passes.items():
        entries[k]["measured_ms"], entries[k]["measured_passes_ms"] = min(times), [round(t, 3) for t in times]
    save()

    steps, seeds, base = args.long_steps, args.long_seeds, state["baseline"]
    console = Console(width=160)
    table = Table(title=f"budget {args.budget}: {args.trials} evaluated candidates per search, proxy {args.steps} "
                        f"steps, long {steps} steps on seeds {', '.join(map(str, seeds))}, {args.data} at "
                        f"{args.imgsz} px")
    for col in ("detector", "proxy mAP", "long mAP (mean)", "long mAP per seed", "measured ms",
                "vs baseline (mAP pts, mean \\[range over seeds])", "earlier winners: long mAP (mean)"):
        table.add_column(col, justify="right")
    for k, v in entries.items():
        maps, gains = long_maps(v, steps, seeds), gain_points(v, base, steps, seeds)
        table.add_row(k if k != "baseline" else f"baseline GhostNetV2 x{base['width']}",
                      f"{v['best_map']:.4f}" if "best_map" in v else "-",
                      f"{statistics.mean(maps):.4f}", " / ".join(f"{m:.4f}" for m in maps),
                      f"{v['measured_ms']:.2f}" if "measured_ms" in v else "-",
                      f"{statistics.mean(gains):+.1f}" + (f" \\[{min(gains):+.1f}, {max(gains):+.1f}]"
                                                          if len(seeds) > 1 else ""),
                      earlier_winners(v, steps, seeds))
    console.print(table)

    def mean_long(key: str) -> float:
        return statistics.mean(long_maps(entries[key], steps, seeds))

    def proxy(key: str) -> float:
        return state["searches"][key]["best_map"]

    pairs = [s for s in args.seeds if f"tpe-{s}" in entries and f"random-{s}" in entries]
    summary = {
        "tpe_beats_random_long": f"{sum(mean_long(f'tpe-{s}') > mean_long(f'random-{s}') for s in pairs)}/{len(pairs)}",
        "tpe_beats_random_proxy": f"{sum(proxy(f'tpe-{s}') > proxy(f'random-{s}') for s in args.seeds)}/"
                                  f"{len(args.seeds)}",
        **{f"mean_long_map_{sampler}": statistics.mean(mean_long(f"{sampler}-{s}") for s in args.seeds
                                                       if f"{sampler}-{s}" in entries)
           for sampler in ("tpe", "random")},
        "baseline_long_map": mean_long("baseline"), "long_seeds": seeds, "budget": args.budget,
        "gain_points": {k: [round(g, 2) for g in gain_points(v, base, steps, seeds)]
                        for k, v in entries.items() if k != "baseline" and k not in refs},
        # each search's winner against each reference, paired by seed as against the baseline
        "references": {r: {"gain_over_baseline": [round(g, 2) for g in gain_points(ref, base, steps, seeds)],
                           "winners_gain": {k: [round(g, 2) for g in gain_points(state["searches"][k], ref, steps,
                                                                                  seeds)]
                                            for k in entries if k in state["searches"]}}
                       for r, ref in refs.items()},
    }
    state["summary"] = summary
    save()
    console.print(summary)


if __name__ == "__main__":
    main()
