"""What a space YAML may say: its keys, their types, defaults and rules, and the checks across keys.

    imgsz: 320                      # top level: imgsz?, stem?, stages, last, neck, head, description?
    stem: 16
    stages:                         # stride is fixed; depth and width are required
      - {stride: 1, depth: 1, width: [8, 12, 16]}
      ...
    last: [480, 640, 960]
    neck: {width: [48, 64, 96, 128], depth: {low: 1, high: 2}}      # or width_p3, width_p4, width_p5
    head: {width: [32, 48, 64]}

`parse_space(raw, where)` turns the YAML value into leaves (see `leaves.py`), or raises a
`UserError` naming the key path, e.g. `stages[2].width: low 64 > high 32`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from nas.errors import UserError

from .leaves import Fixed, Leaf, parse_leaf

REQUIRED = object()
OPTIONAL = object()  # a key that may be left out and then has no leaf (the neck's width forms)
STEM_STRIDE = 2  # the stem conv halves the input; the stages take it on to 8, 16 and 32
SE_RATIO = 0.25  # GhostNet's squeeze-excite reduction when SE is on


@dataclass(frozen=True)
class Key:
    kind: type | tuple
    default: Any = REQUIRED
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    searchable: bool = True
    doc: str = ""


def _positive(rule="a positive int"):
    return dict(check=lambda v: v > 0, rule=rule)


_ODD = dict(check=lambda v: v > 0 and v % 2 == 1, rule="an odd positive int")
_RATIO = dict(check=lambda v: 2 <= v <= 4, rule="a Ghost ratio between 2 and 4")
_BRANCHES = dict(check=lambda v: 0 <= v <= 4, rule="between 0 and 4")

STAGE_KEYS: dict[str, Key] = {
    "stride": Key(int, check=lambda v: v in (1, 2), rule="1 or 2", searchable=False,
                  doc="stride of the stage's first block (fixed)"),
    "depth": Key(int, **_positive("an int >= 1"), doc="number of Ghost bottlenecks"),
    "width": Key(int, **_positive(), doc="output channels"),
    "expansion": Key((float, int), 3.0, **_positive("a number > 0"), doc="mid channels = width * expansion"),
    "kernel": Key(int, 3, **_ODD, doc="depthwise kernel of stride-2 blocks and their shortcut"),
    "se": Key(bool, False, doc="squeeze-excite (ratio 0.25) on the mid channels"),
    "ratio": Key(int, 2, **_RATIO, doc="Ghost ratio: 1/ratio of the channels from a full conv"),
    "attention": Key(bool, False, doc="DFC attention on the expansion Ghost module (GhostNetV2)"),
    "dfc_kernel": Key(int, 5, **_ODD, doc="DFC attention kernel; sampled only when attention is on"),
    "branches": Key(int, 0, **_BRANCHES, doc="re-param branches (GhostNetV3); 0 = plain"),
    "scale": Key(bool, True, doc="the 1x1 scale branch; sampled only when branches > 0"),
}
TOP_KEYS: dict[str, Key] = {
    "description": Key(str, "", searchable=False, doc="free text"),
    "imgsz": Key(int, 320, check=lambda v: v > 0 and v % 32 == 0, rule="a positive multiple of 32",
                 doc="input size"),
    "stem": Key(int, 16, **_positive(), doc="stem conv width"),
    "last": Key(int, **_positive(), doc="final 1x1 conv width (P5 tap)"),
}
NECK_LEVELS = ("width_p3", "width_p4", "width_p5")
SECTIONS: dict[str, dict[str, Key]] = {
    # The neck takes one width for every level (`width`) or one per level (`width_p3..p5`), never
    # both; `_check_neck_widths` enforces that. Keys are sampled in this order. The keys an older
    # space could not have either replace `width` or come after `depth` and `ratio`, and default
    # to fixed values (no parameters), so an old space asks for the same parameters in the same
    # order as before.
    "neck": {
        "width": Key(int, OPTIONAL, **_positive(), doc="channels of every PAN level"),
        **{k: Key(int, OPTIONAL, **_positive(), doc=f"channels of the PAN's P{k[-1]} level") for k in NECK_LEVELS},
        "depth": Key(int, 1, **_positive("an int >= 1"), doc="Ghost bottlenecks per CSP block"),
        "ratio": Key(int, 2, **_RATIO, doc="Ghost ratio of every neck Ghost module"),
        "attention": Key(bool, False, doc="DFC attention on the expansion module of the CSP bottlenecks"),
        "dfc_kernel": Key(int, 5, **_ODD, doc="DFC attention kernel; sampled only when attention is on"),
        "branches": Key(int, 0, **_BRANCHES, doc="re-param branches (GhostNetV3) of every neck Ghost module"),
    },
    "head": {
        "width": Key(int, **_positive(), doc="channels of the Detect branches"),
    },
}
ALLOWED_TOP = ["description", "imgsz", "stem", "stages", "last", *SECTIONS]


@dataclass
class ParsedSpace:
    """A space YAML as leaves, key by key, with defaults filled in."""
    top: dict[str, Leaf]
    stages: list[dict[str, Leaf]]
    sections: dict[str, dict[str, Leaf]] = field(default_factory=dict)
    description: str = ""


def _parse_mapping(raw: Any, keys: dict[str, Key], path: str) -> dict[str, Leaf]:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with keys {', '.join(keys)}, got {raw!r}")
    unknown = [k for k in raw if k not in keys]
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(keys)}")
    leaves = {}
    for name, key in keys.items():
        where = f"{path}.{name}" if path else name
        if name in raw:
            leaves[name] = parse_leaf(raw[name], where, key.kind, key.check, key.rule, key.searchable)
        elif key.default is REQUIRED:
            raise UserError(f"{where}: missing (required; {key.doc})")
        elif key.default is not OPTIONAL:
            leaves[name] = Fixed(key.default)
    return leaves


def parse_space(raw: Any, where: str = "space") -> ParsedSpace:
    """The YAML value of a space file as leaves, validated. Errors read `<where>: <key path>: <problem>`."""
    try:
        return _parse_space(raw)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _parse_space(raw: Any) -> ParsedSpace:
    if not isinstance(raw, dict):
        raise UserError(f"a space must be a mapping with keys {', '.join(ALLOWED_TOP)}")
    unknown = [k for k in raw if k not in ALLOWED_TOP]
    if unknown:
        raise UserError(f"unknown key(s) {unknown}; allowed: {', '.join(ALLOWED_TOP)}")
    # Keys are checked in the order they are written in (ALLOWED_TOP), so the first error reported
    # is the first one in the file.
    before = {k: key for k, key in TOP_KEYS.items() if k != "last"}
    top = _parse_mapping({k: v for k, v in raw.items() if k in before}, before, "")
    description = top.pop("description").value

    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise UserError(f"stages: expected a non-empty list of stage mappings, got {stages_raw!r}")
    stages = [_parse_mapping(st, STAGE_KEYS, f"stages[{i}]") for i, st in enumerate(stages_raw)]
    for i, (st, st_raw) in enumerate(zip(stages, stages_raw)):
        _check_conditionals(st, st_raw, f"stages[{i}]")
    _check_strides(stages)
    top.update(_parse_mapping({k: v for k, v in raw.items() if k == "last"}, {"last": TOP_KEYS["last"]}, ""))

    sections = {}
    for name, keys in SECTIONS.items():
        if name not in raw:
            raise UserError(f"{name}: missing (required; keys {', '.join(keys)})")
        sections[name] = _parse_mapping(raw[name], keys, name)
        if name == "neck":
            _check_neck_widths(raw[name])
            _check_conditionals(sections[name], raw[name], name)
    return ParsedSpace(top, stages, sections, description)


def _never(leaf: Leaf, value: Any) -> bool:
    """The leaf can only ever be `value`."""
    return isinstance(leaf, Fixed) and leaf.value == value


def _check_conditionals(leaves: dict[str, Leaf], raw: dict, path: str) -> None:
    """A conditional key given where its condition can never hold is a mistake, not a no-op."""
    if "dfc_kernel" in raw and _never(leaves["attention"], False):
        raise UserError(f"{path}.dfc_kernel: has no effect because {path}.attention is always false")
    if "scale" in raw and _never(leaves["branches"], 0):
        raise UserError(f"{path}.scale: has no effect because {path}.branches is always 0")


def _check_neck_widths(raw: dict) -> None:
    """Either `width` (every level) or all of `width_p3`, `width_p4`, `width_p5`."""
    levels = [k for k in NECK_LEVELS if k in raw]
    either = "give one width for every level (neck.width) or one per level (neck.width_p3, width_p4, width_p5)"
    if "width" in raw and levels:
        raise UserError(f"neck.{levels[0]}: cannot be combined with neck.width; {either}, not both")
    if "width" not in raw and not levels:
        raise UserError(f"neck.width: missing (required; {either})")
    if levels and len(levels) < len(NECK_LEVELS):
        missing = next(k for k in NECK_LEVELS if k not in raw)
        raise UserError(f"neck.{missing}: missing (per-level widths need all of width_p3, width_p4 and "
                        f"width_p5; or give one neck.width for every level)")


def _check_strides(stages: list[dict[str, Leaf]]) -> None:
    """The neck taps the backbone at strides 8, 16 and 32, so the stages must reach each exactly."""
    stride, reached = STEM_STRIDE, []
    for st in stages:
        stride *= st["stride"].value
        reached.append(stride)
    if reached[-1] != 32 or 8 not in reached or 16 not in reached:
        raise UserError(f"stages: the stage strides must take the stem's stride {STEM_STRIDE} to 8, 16 and "
                        f"32 exactly (the neck taps those); after each stage they reach {reached}")
