"""Accuracy of the block model (evaluators/latency/block_model.py): blocks nobody timed, predicted
from the blocks a table has.

    python benchmarks/bench_block_model.py --cache studies/latency --archs 100 --measure 30

1. Builds (or reuses) the table of `--archs` random architectures of the space on this machine;
   `--passes 2` times every block again and keeps the faster (on a busy machine noise only adds).
2. Held-out blocks: k-fold over the blocks of these architectures (fit on k-1 folds, predict the
   last): relative error per block, overall and per module. Beside it, the timing's own
   repeatability: `--retime` blocks timed again (the model cannot beat the timings it fits).
3. Whole models: `--measure` of those architectures measured whole (best of `--repeats` passes),
   split in k folds by architecture; for each fold, every block of its architectures is removed
   from the table, the model is fitted on what is left and the fold's architectures are predicted
   from the model alone (calibrated as a search is: a * sum + b, fitted on `--calibrate` other
   architectures). Compared with the same architectures predicted from their timed blocks.

Latency figures depend on what else runs on the machine: check `uptime` first.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from evaluators.latency import Target
from evaluators.latency.block_model import BlockModel
from evaluators.latency.calibration import fit_calibration
from evaluators.latency.predictor import LatencyPredictor
from nas.space import load_space


def errors(predicted, measured) -> dict:
    rel = np.abs(np.asarray(predicted) / np.asarray(measured) - 1)
    return {"n": int(rel.size), "median_pct": float(np.median(rel) * 100), "mean_pct": float(rel.mean() * 100),
            "max_pct": float(rel.max() * 100), "within_10pct": float(np.mean(rel <= 0.10))}


def fmt(e: dict) -> str:
    return (f"{e['median_pct']:.1f}% / {e['mean_pct']:.1f}% / {e['max_pct']:.0f}%, "
            f"{e['within_10pct']:.0%} within 10% (n={e['n']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="spaces/ghost_yolo.yaml")
    ap.add_argument("--cache", default="studies/latency", help="table folder (reused: building one takes minutes)")
    ap.add_argument("--archs", type=int, default=100, help="architectures whose blocks make the table")
    ap.add_argument("--measure", type=int, default=30, help="of those, measured whole for the whole-model test")
    ap.add_argument("--calibrate", type=int, default=10, help="other architectures, for the calibration")
    ap.add_argument("--repeats", type=int, default=2, help="whole-model passes; each keeps its smallest median")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--passes", type=int, default=1, help="timing passes over the table's blocks (fastest kept)")
    ap.add_argument("--retime", type=int, default=48, help="table blocks timed again: the timing's repeatability")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=None, help="default: all physical cores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    console = Console()
    target = Target.resolve("cpu", None, args.threads, args.imgsz)
    space = load_space(args.space)
    archs = [space.random_arch(args.seed + i, 80) for i in range(args.archs)]
    calibration = [space.random_arch(args.seed + 1_000_000 + i, 80) for i in range(args.calibrate)]
    for a in archs + calibration:
        a["imgsz"] = args.imgsz
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(f"target {target.describe()}, load average {load:.2f}")

    predictor = LatencyPredictor(target, args.cache)
    start = time.perf_counter()
    for arch in track(archs + calibration, description="block table", console=console):
        predictor.warm([arch])
    wanted = list({k: None for a in archs + calibration for k, _ in predictor.blocks(a)})
    for p in range(1, args.passes):  # pass p + 1: every block again, the fastest kept
        for i in track(range(0, len(wanted), 16), description=f"block pass {p + 1}/{args.passes}", console=console):
            predictor._measure(wanted[i:i + 16])
    console.print(f"table: {len(predictor.table)} blocks ({predictor.measured} timed now, "
                  f"{time.perf_counter() - start:.0f} s)")
    table = {k: predictor.table[k] for k in wanted}  # this run's blocks (a shared folder may hold others)

    # -- held-out blocks ------------------------------------------------------------------------
    keys = sorted(table)
    fold = {k: i % args.folds for i, k in enumerate(random.Random(args.seed).sample(keys, len(keys)))}
    predicted = {}
    for f in range(args.folds):
        model = BlockModel.fit({k: v for k, v in table.items() if fold[k] != f})
        predicted.update({k: model.predict(k) for k in keys if fold[k] == f})
    blocks = errors([predicted[k] for k in keys], [table[k] for k in keys])
    per_module = defaultdict(list)
    for k in keys:
        per_module[json.loads(k)[0]].append(k)
    modules = {m: errors([predicted[k] for k in ks], [table[k] for k in ks]) for m, ks in sorted(per_module.items())}

    retimed = random.Random(args.seed + 1).sample(keys, min(args.retime, len(keys)))
    again = {}
    for i in range(0, len(retimed), 16):
        predictor.wait_quiet()
        again.update(predictor.backend.time_blocks(retimed[i:i + 16]))
    repeat = errors([again[k] for k in retimed], [table[k] for k in retimed])

    # -- whole models ---------------------------------------------------------------------------
    evaluation = archs[:args.measure]
    passes = []
    for r in range(args.repeats):
        passes.append([predictor.measure(a) for a in track(evaluation + calibration, console=console,
                                                          description=f"whole models {r + 1}/{args.repeats}")])
    best = np.min(passes, axis=0)
    measured, measured_cal = best[:len(evaluation)], best[len(evaluation):]
    fit = fit_calibration([predictor.block_sum(a) for a in calibration], measured_cal)
    timed = [fit.apply(predictor.block_sum(a)) for a in evaluation]
    modelled = [0.0] * len(evaluation)
    for f in range(args.folds):
        held = [i for i in range(len(evaluation)) if i % args.folds == f]
        out = {k for i in held for k, _ in predictor.blocks(evaluation[i])}
        model = BlockModel.fit({k: v for k, v in table.items() if k not in out})
        for i in held:
            modelled[i] = fit.apply(sum(model.predict(k) * n for k, n in predictor.blocks(evaluation[i])))
    whole_model, whole_table = errors(modelled, measured), errors(timed, measured)

    figures = {"target": target.to_dict(), "load_average": load, "space": args.space, "archs": args.archs,
               "table_blocks": len(table), "folds": args.folds, "blocks": blocks, "per_module": modules,
               "timing_repeatability": repeat, "calibration": fit.to_dict(),
               "whole_models_model_only": whole_model, "whole_models_timed_blocks": whole_table,
               "measured_ms": {"min": float(measured.min()), "median": float(np.median(measured)),
                               "max": float(measured.max())},
               "pairs": [{"measured_ms": float(m), "model_ms": float(p), "table_ms": float(t)}
                         for m, p, t in zip(measured, modelled, timed)]}

    out = Table(title=f"block model, {args.folds}-fold ({target.key()}); relative error median / mean / max")
    out.add_column("test")
    out.add_column("error", justify="right")
    out.add_row(f"held-out blocks ({len(table)} timed)", fmt(blocks))
    for m, e in modules.items():
        out.add_row(f"  {m}", fmt(e))
    out.add_row("timing repeatability (a block timed again)", fmt(repeat))
    out.add_row(f"whole models, every block held out ({len(evaluation)})", fmt(whole_model))
    out.add_row("whole models, timed blocks (the table)", fmt(whole_table))
    out.add_row("calibration (a * sum + b)", f"a={fit.a:.3f} b={fit.b:.2f} ms, fit error {fit.error:.1%}")
    out.add_row("measured min / median / max", "{min:.2f} / {median:.2f} / {max:.2f} ms".format(**figures["measured_ms"]))
    console.print(out)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
