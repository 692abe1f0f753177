"""`nas val ARCH.yaml --weights W --data D`: COCO mAP of trained weights on a validation split."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.cli.train import add_device_args, check_common, model_for_data


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "val", help="mAP of trained weights on a dataset's validation split",
        description="Build the architecture, load its weights (as written by nas train) and score it on the "
                    "validation split: scores > --conf, class-aware NMS at --iou, boxes mapped back to the "
                    "original images, mAP@0.5:0.95 and mAP@0.5 with faster-coco-eval.")
    p.add_argument("arch", type=Path, help="architecture YAML")
    p.add_argument("--weights", type=Path, required=True, help="state dict file (weights.pt from nas train)")
    p.add_argument("--data", default="synthetic", help="dataset, as for nas train (default: synthetic)")
    p.add_argument("--split", default="val",
                   help="split to score (default: val; held out of the training images when the data has none)")
    p.add_argument("--imgsz", type=int, default=None, help="input size in pixels (default: the architecture's)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default: 16)")
    add_device_args(p)
    p.add_argument("--conf", type=float, default=0.001, help="score threshold (default: 0.001)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default: 0.7)")
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image (default: 300)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_common(args)
    from evaluators.validate import evaluate
    from nas.cli.onnx import load_weights
    from nas.models import build_model

    arch, dataset, imgsz = model_for_data(args.arch, args.data, args.imgsz, args.split, augment=False,
                                          quiet=args.json)
    model = build_model(arch)
    load_weights(model, args.weights)
    metrics = evaluate(model.to(args.device), dataset, device=args.device, conf=args.conf, iou=args.iou,
                       max_det=args.max_det, batch=args.batch, workers=args.workers)
    if args.json:
        print(json.dumps({"arch": str(args.arch), "weights": str(args.weights), "data": args.data,
                          "split": args.split, "splits": dataset.split, "imgsz": imgsz, "summary": dataset.summary(),
                          **metrics}))
        return 0
    print(f"mAP {metrics['map']:.4f}  mAP50 {metrics['map50']:.4f}  mAP75 {metrics['map75']:.4f}  "
          f"({metrics['images']} images, {metrics['time']:.1f} s)")
    return 0
