"""`nas info ARCH.yaml`: parameters, FLOPs and a per-layer table of an architecture."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="parameters, FLOPs and layers of an architecture YAML",
                       description="Build an architecture YAML and print its parameters, FLOPs (thop, on a "
                                   "copy of the model) and a per-layer table.")
    p.add_argument("arch", help="architecture YAML (e.g. spaces/reference/ghostnet_v2_yolo.yaml)")
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: the YAML's imgsz)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(run=run)


def run(args) -> int:
    from evaluators.complexity import complexity, per_layer
    from nas.errors import UserError
    from nas.models import build_model

    model = build_model(args.arch)
    imgsz = args.imgsz or model.imgsz
    if imgsz <= 0:
        raise UserError(f"--imgsz must be positive, got {imgsz}")
    train, deploy = complexity(model, imgsz), complexity(model, imgsz, deploy=True)
    layers = per_layer(model, imgsz)
    summary = {"arch": args.arch, "imgsz": imgsz, "nc": model.nc, "params": train["params"],
               "flops": train["flops"], "macs": train["macs"], "deploy_params": deploy["params"],
               "deploy_flops": deploy["flops"], "layers": layers}
    if args.json:
        print(json.dumps(summary))
        return 0
    _print_tables(summary)
    return 0


def _print_tables(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{s['arch']} @ {s['imgsz']}", title_justify="left")
    for col, just in (("#", "right"), ("from", "right"), ("module", "left"), ("args", "left"),
                      ("params", "right"), ("MFLOPs", "right"), ("output", "left")):
        table.add_column(col, justify=just)
    for row in s["layers"]:
        src = row["from"]
        table.add_row(row["name"], str(src[0] if src and len(src) == 1 else src), row["type"],
                      _args(row["args"]), f"{row['params']:,}", f"{2 * row['macs'] / 1e6:.1f}",
                      _shape(row["shape"]))
    console = Console()
    console.print(table)
    fused = "" if s["deploy_params"] == s["params"] else (
        f"  (deployed, re-param branches fused: {s['deploy_params']:,} params, {s['deploy_flops'] / 1e9:.2f} GFLOPs)")
    console.print(f"[bold]{s['params']:,}[/] params, [bold]{s['flops'] / 1e9:.2f}[/] GFLOPs "
                  f"at {s['imgsz']}x{s['imgsz']}, nc={s['nc']}{fused}")


def _args(args) -> str:
    return "" if not args else ", ".join(str(v) for v in args.values())


def _shape(shape) -> str:
    if not shape:
        return ""
    if isinstance(shape[0], list):
        return " ".join("x".join(map(str, s[1:])) for s in shape)
    return "x".join(map(str, shape[1:]))
