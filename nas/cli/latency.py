"""`nas latency ARCH.yaml`: measured latency of the deploy graph on a named target: this machine,
or with `--target URL` the device running `nas device serve` there."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "latency", help="measure an architecture's latency (deploy graph, batch 1)",
        description="Build the architecture, re-parameterize it and time it at batch 1: warm-up, then "
                    "the median of many runs, with its spread and the target it was measured on.")
    p.add_argument("arch", type=Path, help="architecture YAML")
    p.add_argument("--imgsz", type=int, default=None, help="input size in pixels (default: the architecture's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default=None,
                   help="default: onnxruntime on cpu, torch on cuda")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all physical cores)")
    p.add_argument("--runs", type=int, default=50, help="timed runs, at least (default: 50, and at least 1 s)")
    p.add_argument("--target", metavar="URL", default=None,
                   help="time on a device running `nas device serve` (e.g. http://192.168.1.20:8765): exported "
                        "here, timed there with onnxruntime; --threads defaults to the server's")
    p.add_argument("--token-file", metavar="F", default=None, help="the device server's token (default: $NAS_DEVICE_TOKEN)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=run)


def check_imgsz(imgsz: int | None) -> None:
    """Sizes below 32 leave the stride-32 level empty; others work (multiples of 32 avoid padding)."""
    if imgsz is not None and imgsz < 32:
        raise UserError(f"--imgsz must be at least 32 pixels, got {imgsz}")


def build_arch(path: Path):
    """The model an architecture YAML describes; a missing file is a UserError."""
    if not path.is_file():
        raise UserError(f"architecture file not found: {path}")
    from nas.models import build_model
    return build_model(str(path))


def run(args: argparse.Namespace) -> int:
    check_imgsz(args.imgsz)
    if args.runs < 1:
        raise UserError(f"--runs must be at least 1, got {args.runs}")
    from evaluators.complexity import complexity
    from evaluators.latency import Target, measure_latency

    if args.target:
        result, model, imgsz = _remote(args)
    else:
        if args.token_file:
            raise UserError("--token-file goes with --target URL")
        Target.resolve(args.device, args.backend, args.threads)  # refuse impossible targets before building
        model = build_arch(args.arch)
        imgsz = args.imgsz or model.imgsz
        result = measure_latency(model, imgsz, args.device, args.backend, args.threads, runs=args.runs)
    cost = complexity(model, imgsz, deploy=True)
    if args.json:
        print(json.dumps({"arch": str(args.arch), "latency_ms": result.median_ms, **result.to_dict(),
                          **({"device_url": args.target} if args.target else {}),
                          "params": cost["params"], "macs": cost["macs"], "flops": cost["flops"]}))
        return 0
    t = result.target
    print(f"{args.arch}: {result.median_ms:.2f} ms median (p10 {result.p10_ms:.2f}, p90 {result.p90_ms:.2f}, "
          f"std {result.std_ms:.2f}; {result.runs} runs)")
    print(f"  target {t.device}/{t.backend}, {t.threads} thread{'s' * (t.threads != 1)}, {t.imgsz} px, "
          f"{t.processor}" + (f", torch {t.torch_version}" if t.torch_version else "")
          + (f", onnxruntime {t.onnxruntime_version}" if t.onnxruntime_version else "")
          + (f", on {t.hostname} ({args.target})" if args.target else "") + f"  [{t.key()}]")
    print(f"  deploy graph: {cost['params'] / 1e6:.2f} M params, {cost['flops'] / 1e9:.2f} GFLOPs")
    return 0


def _remote(args: argparse.Namespace):
    """(LatencyResult, model, imgsz) of the architecture timed on the device server at args.target."""
    from evaluators.latency.remote import Device, RemoteBackend, read_token

    if args.device != "cpu" or args.backend not in (None, "onnxruntime"):
        raise UserError("--target times with onnxruntime on the device (its own execution provider): "
                        "drop --device and --backend")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"threads must be at least 1, got {args.threads}")
    device = Device(args.target, read_token(args.token_file))  # unreachable or refused: one line, before building
    model = build_arch(args.arch)
    imgsz = args.imgsz or model.imgsz
    backend = RemoteBackend(device, imgsz=imgsz, threads=args.threads)
    return backend.measure_result(model, runs=args.runs), model, imgsz
