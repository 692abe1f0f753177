"""Architecture YAML: load, validate, and write back.

An architecture is concrete (no choices left) and close to Ultralytics model YAML:

    nc: 80
    imgsz: 320
    backbone:
      - [-1, 1, ConvBNAct, [16, 3, 2]]     # [from, repeats, module, args]
      ...
    head:
      ...
      - [[15, 18, 21], 1, Detect, [nc, 96]]
    meta: {...}                           # optional, ignored when building

Rows are numbered across backbone then head. `from` is -1 (previous row), an absolute row index,
or a list of them. Every problem is reported as a `UserError` naming the row and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nas.errors import UserError

from .registry import REQUIRED, Spec

SECTIONS = ("backbone", "head")
TOP_KEYS = {"nc", "imgsz", "backbone", "head", "meta"}


def read_yaml(path: str | Path) -> Any:
    """yaml.safe_load a file, turning I/O and syntax errors (python tags included) into UserError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: invalid YAML{where}: {problem}") from None


def load_arch(source: str | Path | dict) -> dict:
    """An architecture dict from a YAML path or a dict, validated (see `validate_arch`)."""
    if isinstance(source, dict):
        arch, where = source, "architecture"
    else:
        arch, where = read_yaml(source), str(source)
    validate_arch(arch, where)
    return arch


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _type_ok(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):  # bool is an int subclass; only accept it where bool is asked for
        return bool in kinds
    return isinstance(value, kinds)


def resolve_args(spec: Spec, args: list, nc: int, where: str) -> dict:
    """Positional row args -> a dict by name, with defaults, types and ranges checked."""
    if len(args) > len(spec.args):
        raise UserError(f"{where}: too many args ({len(args)}); expected at most {len(spec.args)}: "
                        f"[{', '.join(a.name for a in spec.args)}]")
    out = {}
    for i, arg in enumerate(spec.args):
        if i < len(args):
            value = nc if args[i] == "nc" and arg.name == "nc" else args[i]
        elif arg.default is REQUIRED:
            raise UserError(f"{where}: missing arg {i} '{arg.name}'; expected "
                            f"[{', '.join(a.name for a in spec.args)}]")
        else:
            value = arg.default
        if not _type_ok(value, arg.kind):
            raise UserError(f"{where}: arg {i} '{arg.name}' must be {_kind_name(arg.kind)}, got {value!r}")
        if arg.check is not None and not arg.check(value):
            raise UserError(f"{where}: arg {i} '{arg.name}' must be {arg.rule}, got {value!r}")
        out[arg.name] = value
    return out


def rows(arch: dict) -> list[tuple[str, int, list]]:
    """(section, index within section, row) for every row, numbered across sections."""
    return [(s, j, row) for s in SECTIONS for j, row in enumerate(arch.get(s) or [])]


def validate_arch(arch: Any, where: str = "architecture") -> None:
    """Structure, registry names, arg types, `from` indices, channels and strides of every row."""
    from .graph import plan  # the planner does the per-row checks; it lives beside the builder

    if not isinstance(arch, dict):
        raise UserError(f"{where}: an architecture must be a mapping with nc, imgsz, backbone, head")
    unknown = set(arch) - TOP_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    for key in ("nc", "imgsz"):
        if not isinstance(arch.get(key), int) or isinstance(arch.get(key), bool) or arch[key] <= 0:
            raise UserError(f"{where}: '{key}' must be a positive int, got {arch.get(key)!r}")
    for key in SECTIONS:
        if not isinstance(arch.get(key), list) or not arch[key]:
            raise UserError(f"{where}: '{key}' must be a non-empty list of [from, repeats, module, args] rows")
    if "meta" in arch and not isinstance(arch["meta"], dict):
        raise UserError(f"{where}: 'meta' must be a mapping")
    layers = plan(arch, where)
    if layers[-1].name != "Detect" or any(layer.name == "Detect" for layer in layers[:-1]):
        raise UserError(f"{where}: the last head row, and only it, must be Detect")


class _Flow(list):
    """A list that YAML writes on one line: rows and args read like Ultralytics files."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def dump_arch(arch: dict) -> str:
    """The architecture as YAML text: top-level keys in a fixed order, one row per line."""
    out = {k: arch[k] for k in ("nc", "imgsz") if k in arch}
    for s in SECTIONS:
        out[s] = [_Flow([r[0] if isinstance(r[0], int) else _Flow(r[0]), r[1], r[2], _Flow(r[3])])
                  for r in arch[s]]
    if arch.get("meta"):
        out["meta"] = arch["meta"]
    text = yaml.dump(out, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    # Number the rows in a trailing comment: `from` indices are easier to follow.
    lines, i = [], 0
    for line in text.splitlines():
        if line.startswith("- ["):
            line, i = f"{line:<64}  # {i}", i + 1
        lines.append(line)
    return "\n".join(lines) + "\n"


def save_arch(arch: dict, path: str | Path) -> None:
    Path(path).write_text(dump_arch(arch))
