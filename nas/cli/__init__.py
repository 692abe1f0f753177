"""`nas` command line: one module per subcommand, each with `add_parser(subparsers)` and `run(args)`.

User errors (bad files, flags, data, unknown studies) raise `UserError`; main() prints them on
one line and exits with status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nas.errors import UserError

# Subcommand name -> module under nas.cli. Imported lazily so `nas --help` stays fast.
COMMANDS = {
    "search": "nas.cli.search",
    "resume": "nas.cli.search",
    "status": "nas.cli.status",
    "export": "nas.cli.export",
    "info": "nas.cli.info",
    "train": "nas.cli.train",
    "val": "nas.cli.val",
    "latency": "nas.cli.latency",
    "latency-table": "nas.cli.latency_table",
    "onnx": "nas.cli.onnx",
    "device": "nas.cli.device",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Hardware-aware architecture search for Ghost YOLO detectors.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in dict.fromkeys(COMMANDS.values()):  # a module may add several commands
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed on one line
        return int(e.code or 0)
    try:
        return int(args.run(args) or 0)
    except UserError as e:
        print(f"nas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
