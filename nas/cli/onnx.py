"""`nas onnx ARCH.yaml [--weights W] -o model.onnx`: the deployable, re-parameterized ONNX graph,
checked against PyTorch with onnxruntime."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nas.cli.latency import build_arch, check_imgsz
from nas.errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "onnx", help="export an architecture (and its weights) to ONNX",
        description="Build the architecture, load its weights, fuse the re-parameterization branches and "
                    "export the graph with decoded outputs (boxes [1, A, 4] xyxy pixels, scores [1, A, nc]); "
                    "then check it against PyTorch with onnxruntime.")
    p.add_argument("arch", type=Path, help="architecture YAML")
    p.add_argument("--weights", type=Path, default=None,
                   help="state dict saved with torch.save(model.state_dict()) (default: random weights)")
    p.add_argument("-o", "--output", type=Path, default=None, help="ONNX file to write (default: ARCH with .onnx)")
    p.add_argument("--imgsz", type=int, default=None, help="input size in pixels (default: the architecture's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.set_defaults(run=run)


def _first(names, n: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def load_weights(model, path: Path) -> None:
    """Load a state dict file into `model` (training graph, before fusion), refusing with one clear
    line anything that is not exactly this architecture's weights. A checkpoint dict holding the
    state dict under "model", "ema" or "state_dict" is accepted too."""
    import torch

    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or pickled objects that weights_only refuses
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read weights {path}: {first_line}") from None
    if isinstance(state, dict):
        for key in ("ema", "model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{path} is not a state dict (expected torch.save(model.state_dict()))")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        problems = [f"{label} {len(items)} ({_first(items)})"
                    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                    if items]
        raise UserError(f"weights {path} do not match {model.__class__.__name__}: " + "; ".join(problems))
    model.load_state_dict(state)


def run(args: argparse.Namespace) -> int:
    check_imgsz(args.imgsz)
    from evaluators.onnx_export import SUPPORTED_OPSETS, OnnxParityError, check_onnx, export_onnx

    if args.opset not in SUPPORTED_OPSETS:
        raise UserError(f"--opset must be between {SUPPORTED_OPSETS.start} and {SUPPORTED_OPSETS.stop - 1}, "
                        f"got {args.opset}")

    output = args.output or args.arch.with_suffix(".onnx")
    if not output.parent.is_dir():
        raise UserError(f"output folder does not exist: {output.parent}")
    model = build_arch(args.arch)
    if args.weights is not None:
        load_weights(model, args.weights)
    imgsz = args.imgsz or model.imgsz
    path = export_onnx(model, output, imgsz, opset=args.opset)
    try:
        diff = check_onnx(model, path, imgsz)
    except OnnxParityError as e:  # a bug, not a user error: keep the file for inspection
        print(f"nas onnx: {path} written but does not match PyTorch: {e}", file=sys.stderr)
        return 1
    print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  input [1, 3, {imgsz}, {imgsz}]  "
          f"opset {args.opset}  max |onnxruntime - torch| {diff:.2g}")
    return 0
