"""`nas device serve`: the latency server, run on the device a detector ships to (see
evaluators/latency/server.py for the protocol). Imports no torch, Ray or Optuna: a device needs
only numpy and onnxruntime."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from evaluators.latency.server import (
        add_arguments,  # the standard library only, until it serves
    )

    p = subparsers.add_parser(
        "device", help="serve latency measurements from the device you ship to",
        description="Commands run on the target device (phone, Jetson, Raspberry Pi, edge box), which needs "
                    "only numpy and onnxruntime. A search times its candidates there with "
                    "`nas search ... --latency-target http://DEVICE:PORT`.")
    sub = p.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "serve", help="time the ONNX models a search sends (HTTP, token required)",
        description="Listen for a search's timing requests and time its blocks and models here with onnxruntime, "
                    "one request at a time, with the discipline of the local tables (warm-up, interleaved bursts, "
                    "fastest kept, a quiet-machine check first). Prints the URL and the token (unless read from "
                    "--token-file or NAS_DEVICE_TOKEN). Stop with Ctrl-C.")
    add_arguments(s)
    s.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from evaluators.latency.server import serve

    return serve(args)
