"""Architecture generators: the GhostNet reference trunks and the Ghost-YOLO detector family.

They only write rows (dicts and lists); `build_model` turns rows into modules. The search space
fills `ghost_yolo()`'s arguments, so every candidate is an ordinary architecture YAML.
"""
from __future__ import annotations

from .common import make_divisible
from .graph import LayerGraph, plan

# kernel, expansion (mid channels), out channels, SE ratio, stride: the GhostNet table.
GHOSTNET_TABLE = [
    (3, 16, 16, 0.0, 1), (3, 48, 24, 0.0, 2), (3, 72, 24, 0.0, 1), (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1), (3, 240, 80, 0.0, 2), (3, 200, 80, 0.0, 1), (3, 184, 80, 0.0, 1),
    (3, 184, 80, 0.0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1), (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1),
]
GHOSTNET_TAPS = (5, 11, 17)  # rows after bottleneck 4, bottleneck 10, and the final 1x1 conv


def ghostnet_backbone(version: int = 2, width: float = 1.0, dfc: int = 5, branches: int = 3,
                      scale: bool = True) -> list[list]:
    """The official GhostNet V1/V2/V3 trunk as rows: stem, 16 bottlenecks, final 1x1 conv to 960*width.
    V2/V3 put DFC attention on every bottleneck after the first two; V3 adds re-param branches."""
    if version not in (1, 2, 3):
        raise ValueError(f"GhostNet version must be 1, 2 or 3, got {version}")
    c = make_divisible(16 * width)
    rows = [[-1, 1, "ConvBNAct", [c, 3, 2]]]
    for b, (k, exp, out, se, stride) in enumerate(GHOSTNET_TABLE):
        attn = dfc if version >= 2 and b > 1 else 0
        n = branches if version == 3 else 0
        rows.append([-1, 1, "GhostBottleneck",
                     [make_divisible(out * width), make_divisible(exp * width), k, stride, se, 2, attn, n, scale]])
    rows.append([-1, 1, "ConvBNAct", [make_divisible(960 * width), 1, 1]])
    return rows


def ghostnet_trunk(version: int = 2, width: float = 1.0) -> LayerGraph:
    """The reference trunk as a module returning (P3, P4, P5) at strides 8, 16, 32."""
    arch = {"nc": 1, "imgsz": 320, "backbone": ghostnet_backbone(version, width), "head": []}
    return LayerGraph(plan(arch, f"GhostNet V{version}"), outputs=list(GHOSTNET_TAPS))


def stage_backbone(stem: int, stages: list[dict], last: int) -> tuple[list[list], tuple[int, int, int]]:
    """Rows for a searched backbone: a stem conv, one row per stage (repeats = depth) and a final
    1x1 conv. Each stage: width, depth, expansion, kernel, stride, se, ratio, dfc, branches, scale.
    Returns the rows and the P3/P4/P5 tap indices (the last row at stride 8, at 16, the final conv)."""
    rows = [[-1, 1, "ConvBNAct", [stem, 3, 2]]]
    stride, last_at = 2, {}
    for st in stages:
        mid = make_divisible(st["width"] * st["expansion"])
        rows.append([-1, st["depth"], "GhostBottleneck",
                     [st["width"], mid, st["kernel"], st["stride"], float(st["se"]), st["ratio"], st["dfc"],
                      st["branches"], st["scale"]]])
        stride *= st["stride"]
        last_at[stride] = len(rows) - 1
    rows.append([-1, 1, "ConvBNAct", [last, 1, 1]])
    if stride != 32 or 8 not in last_at or 16 not in last_at:
        raise ValueError(f"stage strides must reach 8, 16 and 32; they reach {sorted(last_at)}")
    return rows, (last_at[8], last_at[16], len(rows) - 1)


def pan_neck(taps: tuple[int, int, int], first: int, widths: tuple[int, int, int], depth: int, head_width: int,
             ratio: int = 2, dfc: int = 0, branches: int = 0) -> list[list]:
    """PAN-FPN head rows: 1x1 laterals, top-down (upsample + concat + GhostCSP), bottom-up
    (stride-2 GhostConv + concat + GhostCSP), then Detect on the three outputs.
    `first` is the global index of the first head row (= number of backbone rows).
    `ratio` and `branches` apply to every Ghost module of the neck (the CSP bottlenecks and the
    stride-2 GhostConvs); `dfc` (DFC attention kernel, 0 = off) to the CSP bottlenecks' expansion
    modules, as in the backbone's bottlenecks. The downsampling GhostConvs' rows only carry
    `branches` when it is > 0, so neck rows without branches read as they always have."""
    p3, p4, p5 = taps
    w3, w4, w5 = widths
    csp = lambda w: [w, ratio, dfc, branches]  # noqa: E731
    down = lambda w: [w, 3, 2, ratio] + ([0, branches] if branches else [])  # noqa: E731
    rows = [
        [p5, 1, "ConvBNAct", [w5, 1, 1]],                 # +0  lateral P5
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, p4], 1, "Concat", [1]],
        [-1, depth, "GhostCSP", csp(w4)],                  # +3  top-down P4
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, p3], 1, "Concat", [1]],
        [-1, depth, "GhostCSP", csp(w3)],                  # +6  out P3
        [-1, 1, "GhostConv", down(w3)],
        [[-1, first + 3], 1, "Concat", [1]],
        [-1, depth, "GhostCSP", csp(w4)],                  # +9  out P4
        [-1, 1, "GhostConv", down(w4)],
        [[-1, first], 1, "Concat", [1]],
        [-1, depth, "GhostCSP", csp(w5)],                  # +12 out P5
    ]
    rows.append([[first + 6, first + 9, first + 12], 1, "Detect", ["nc", head_width]])
    return rows


def ghostnet_yolo(version: int = 2, width: float = 1.0, nc: int = 80, imgsz: int = 320,
                  neck_widths=(96, 96, 96), neck_depth: int = 1, head_width: int = 96) -> dict:
    """A detector with the reference GhostNet trunk as backbone."""
    backbone = ghostnet_backbone(version, width)
    head = pan_neck(GHOSTNET_TAPS, len(backbone), tuple(neck_widths), neck_depth, head_width)
    return {"nc": nc, "imgsz": imgsz, "backbone": backbone, "head": head}
