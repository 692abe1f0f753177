"""`nas latency-table SPACE -o FILE`: profile this machine once, into a table file others search with."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from nas.errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "latency-table", help="time the blocks of a space on this machine into a portable table file",
        description="Time the blocks of ARCHS random architectures of SPACE on this machine (the target), "
                    "calibrate on whole models as a search does, and write the table to FILE. Anyone can then "
                    "search against this machine with `nas search SPACE --latency-table FILE`: the blocks "
                    "the table lacks are timed there if that machine is this target (same processor, "
                    "runtime version, threads), else predicted by a model fitted on the table's blocks. "
                    "An existing FILE of the same target is extended; one of another target is refused. "
                    "(A search's own table, studies/latency/latency-*.json, is such a file too: copy it.)")
    p.add_argument("space", type=Path, help="search-space YAML, e.g. spaces/ghost_yolo.yaml")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="the table file to write")
    p.add_argument("--archs", type=int, default=100,
                   help="random architectures whose blocks are timed (default 100: about 1100 blocks of "
                        "the default space, tens of minutes on a laptop CPU)")
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: the space's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default=None,
                   help="default: onnxruntime on cpu, torch on cuda")
    p.add_argument("--threads", type=int, default=None, help="default: all physical cores")
    p.add_argument("--seed", type=int, default=0, help="the search's --seed: the same calibration architectures")
    p.add_argument("--nc", type=int, default=80, help="classes of the detection head (default 80)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.archs < 0:
        raise UserError(f"--archs must be 0 or more, got {args.archs}")
    if not args.space.is_file():
        raise UserError(f"{args.space}: no such file")
    from evaluators.latency import Target
    from evaluators.latency.predictor import LatencyPredictor
    from nas.search.latency import CALIBRATION_ARCHS, TableProgress
    from nas.space import load_space

    space = load_space(str(args.space))
    imgsz = args.imgsz or space.random_arch(args.seed, args.nc)["imgsz"]
    if imgsz < 32:
        raise UserError(f"--imgsz must be at least 32, got {imgsz}")
    target = Target.resolve(args.device, args.backend, args.threads, imgsz)
    predictor = LatencyPredictor(target, path=args.output, scope=space.hash)  # refuses a file of another target
    before, start = len(predictor.table), time.perf_counter()
    print(f"{args.output}: {before} blocks timed on {target.describe()}")
    archs = [space.random_arch(args.seed + i, args.nc) for i in range(args.archs)]
    for a in archs:
        a["imgsz"] = imgsz
    predictor.progress = TableProgress(print)
    predictor.warm(archs)
    if not predictor.calibrated:  # the search's calibration architectures: its scope is found in the file
        calibration = [space.random_arch(args.seed + 1000 + i, args.nc) for i in range(CALIBRATION_ARCHS)]
        for a in calibration:
            a["imgsz"] = imgsz
        predictor.calibrate(calibration)
    fit = predictor.calibration
    print(f"{args.output}: {len(predictor.table)} blocks ({len(predictor.table) - before} new, "
          f"{time.perf_counter() - start:.0f} s); calibration for {args.space}: a={fit.a:.3f} b={fit.b:.2f} ms, "
          f"fit error {fit.error:.1%} on {fit.n} models")
    print(f"search against it anywhere: nas search {args.space} --budget ... --latency-table {args.output}")
    return 0
