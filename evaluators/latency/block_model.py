"""A model of block latency, for the blocks a table has not timed.

The default space holds tens of thousands of distinct blocks; a table holds those its searches
met. A block nobody timed is predicted from the blocks timed on the same target: its cost is
computed from the key alone (no torch, no module built), by walking the deploy graph the key
describes - each conv's multiply-accumulates in three kinds that run at different rates (dense
k x k; dense 1x1, a plain matrix product; depthwise, far below a dense conv's arithmetic rate),
the grouped convs with a channel multiplier apart (Ghost's cheap op at ratio > 2: onnxruntime runs
them group by group, an im2col and a small product each, so they cost per group and per im2col
element, not per MAC; ratio 3 is slower than ratio 4 for the same width, which MACs alone get
backwards), the activations and weights every op reads and writes, and the number of ops (each
costs a fixed overhead in the runtime) - and a per-module linear fit turns those costs into
milliseconds:

    ms = c_kxk * kxk MACs + c_1x1 * 1x1 MACs + c_dw * depthwise MACs + c_col * grouped im2col
         elements + c_group * groups + c_mem * elements moved + c_op * ops + c_0

fitted on the log of timed / predicted (every block weighs the same, fast or slow, and
predictions are not pulled low), robustly (a block timed 2x slow while the machine was busy
counts little), with the coefficients kept non-negative (a cost never makes a block faster). A
module with too few timed blocks of its own uses the fit over all modules, scaled to the blocks
it has; a cost its timed blocks never have (a module whose timed blocks are all 1x1 convs, asked
for a 3x3 one) takes the common fit's coefficient. numpy only; fitting a thousand blocks takes
well under a second, and the same table always gives the same model.

    model = BlockModel.fit(table)     # {block key: ms}
    model.predict(key)                # ms
"""
from __future__ import annotations

import json
import math

import numpy as np

FEATURES = ("kxk_macs", "pointwise_macs", "dw_macs", "grouped_cols", "groups", "elements", "ops")
MIN_BLOCKS = 8  # timed blocks a module needs for a fit of its own (else: the fit over all modules)
HUBER = 0.1     # beyond a 10% error in ratio, a timed block counts less and less (busy-machine outliers)
REG_MAX = 16    # the detection head's DFL bins (nas.models.head.REG_MAX; no torch import here)


def make_divisible(v: float, divisor: int = 4) -> int:
    """nas.models.common.make_divisible, without torch."""
    n = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return n + divisor if n < 0.9 * v else n


class _Cost:
    """What one block's deploy graph does, op by op (square feature maps, batch 1)."""

    def __init__(self):
        self.kxk = self.pointwise = self.dw = 0.0   # MACs
        self.grouped_cols = self.groups = 0.0       # grouped convs with a multiplier: im2col elements, groups
        self.elements = 0.0
        self.ops = 0

    def op(self, elements: float, n: int = 1) -> None:
        """An elementwise or data-movement op that reads and writes `elements` values in all."""
        self.elements += elements
        self.ops += n

    def conv(self, c_in: int, c_out: int, k: int | tuple, size: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> int:
        """A conv (BN folded, ReLU fused by the runtime) with 'same' padding; returns its output size."""
        kh, kw = (k, k) if isinstance(k, int) else k
        out = (size - 1) // stride + 1
        macs = c_out * out * out * (c_in // groups) * kh * kw
        if groups == 1 and kh * kw == 1:
            self.pointwise += macs
        elif groups == 1:
            self.kxk += macs
        elif c_out == groups:
            self.dw += macs
        else:
            self.grouped_cols += groups * out * out * kh * kw
            self.groups += groups
        self.op(c_in * size * size + c_out * out * out + c_out * (c_in // groups) * kh * kw + c_out)
        return out

    def features(self) -> list[float]:
        return [self.kxk, self.pointwise, self.dw, self.grouped_cols, self.groups, self.elements, float(self.ops)]


def _ghost(cost: _Cost, c_in: int, c_out: int, size: int, k: int = 1, stride: int = 1, ratio: int = 2,
           dfc: int = 0, act: bool = True) -> int:
    """nas.models.bottleneck.ghost_module (V3 branches fuse away): primary conv, cheap depthwise
    3x3, concat and slice; with `dfc`, GhostNetV2's attention gate at half resolution."""
    init = math.ceil(c_out / ratio)
    new = init * (ratio - 1)
    out = cost.conv(c_in, init, k, size, stride, act=act)
    cost.conv(init, new, 3, out, groups=init, act=act)
    cost.op((2 * (init + new) + c_out) * out * out, 2)  # concat, slice
    if dfc:
        half = size // 2
        cost.op(c_in * (size * size + half * half))  # avg pool 2x2
        gate = cost.conv(c_in, c_out, k, half, stride, act=False)
        cost.conv(c_out, c_out, (1, dfc), gate, groups=c_out, act=False)
        cost.conv(c_out, c_out, (dfc, 1), gate, groups=c_out, act=False)
        cost.op(2 * c_out * gate * gate)                            # sigmoid
        cost.op(c_out * (gate * gate + out * out))                  # nearest resize
        cost.op(3 * c_out * out * out)                              # gate * ghost
    return out


def _bottleneck(cost: _Cost, c_in: int, c_out: int, size: int, mid: int, k: int = 3, stride: int = 1,
                se: float = 0.0, ratio: int = 2, dfc: int = 0) -> int:
    """nas.models.bottleneck.GhostBottleneck in its deploy form."""
    _ghost(cost, c_in, mid, size, ratio=ratio, dfc=dfc)
    out = cost.conv(mid, mid, k, size, 2, groups=mid, act=False) if stride == 2 else size
    if se > 0:
        reduced = make_divisible(mid * se, 4)
        cost.op(mid * out * out + mid)                              # global average pool
        cost.conv(mid, reduced, 1, 1)
        cost.conv(reduced, mid, 1, 1, act=False)
        cost.op(6 * mid, 3)                                         # hard sigmoid: add, clip, div
        cost.op(3 * mid * out * out)                                # x * gate
    _ghost(cost, mid, c_out, out, ratio=ratio, act=False)
    if stride != 1 or c_in != c_out:
        cost.conv(c_in, c_in, k, size, stride, groups=c_in, act=False)
        cost.conv(c_in, c_out, 1, out, act=False)
    cost.op(3 * c_out * out * out)                                  # residual add
    return out


def _csp(cost: _Cost, c_in: int, c_out: int, size: int, n: int, ratio: int = 2, dfc: int = 0) -> None:
    """nas.models.neck.GhostCSP."""
    hidden = max(4, c_out // 2)
    cost.conv(c_in, hidden, 1, size)
    cost.conv(c_in, hidden, 1, size)
    for _ in range(n):
        _bottleneck(cost, hidden, hidden, size, hidden, 3, 1, 0.0, ratio, dfc)
    cost.op(4 * hidden * size * size)                               # concat
    cost.conv(2 * hidden, c_out, 1, size)


def _detect(cost: _Cost, c_ins: list[int], sizes: list[int], nc: int, width: int) -> None:
    """nas.models.head.Detect with its decode: two 3x3 convs and a 1x1 per branch and level, then
    DFL softmax over the bins, boxes and sigmoid scores over all anchors."""
    anchors = 0
    for c, s in zip(c_ins, sizes):
        for c_last in (4 * REG_MAX, nc):
            cost.conv(c, width, 3, s)
            cost.conv(width, width, 3, s)
            cost.conv(width, c_last, 1, s, act=False)
        cost.op(2 * (4 * REG_MAX + nc) * s * s)                     # concat box and class maps
        anchors += s * s
    channels = 4 * REG_MAX + nc
    cost.op(2 * channels * anchors, 2)                              # flatten and concat the levels
    cost.op(2 * 4 * REG_MAX * anchors * 3, 3)                       # softmax over the bins
    cost.op(3 * 4 * REG_MAX * anchors, 2)                           # weight by the bins and sum
    cost.op(8 * 4 * anchors, 6)                                     # distances -> boxes, times strides
    cost.op(2 * nc * anchors, 2)                                    # sigmoid, transpose


def block_cost(key: str) -> list[float]:
    """FEATURES of the block a table key names: MACs of dense k x k, 1x1 and depthwise convs, im2col
    elements and groups of grouped convs, elements moved, ops."""
    name, a, c_ins, sizes, repeats = json.loads(key)
    cost, c, size = _Cost(), c_ins[0], sizes[0]
    if name == "ConvBNAct":
        for i in range(repeats):
            size = cost.conv(c if i == 0 else a["c_out"], a["c_out"], a.get("k", 1), size,
                             a.get("stride", 1) if i == 0 else 1)
    elif name == "GhostConv":
        for i in range(repeats):
            size = _ghost(cost, c if i == 0 else a["c_out"], a["c_out"], size, a.get("k", 1),
                          a.get("stride", 1) if i == 0 else 1, a.get("ratio", 2), a.get("dfc", 0))
    elif name == "GhostBottleneck":
        for i in range(repeats):
            size = _bottleneck(cost, c if i == 0 else a["c_out"], a["c_out"], size, a["mid"], a.get("k", 3),
                               a.get("stride", 1) if i == 0 else 1, float(a.get("se", 0.0)),
                               a.get("ratio", 2), a.get("dfc", 0))
    elif name == "GhostCSP":
        _csp(cost, c, a["c_out"], size, repeats, a.get("ratio", 2), a.get("dfc", 0))
    elif name == "Detect":
        _detect(cost, c_ins, sizes, a["nc"], a["width"])
    elif name == "Concat":
        cost.op(2 * sum(ci * s * s for ci, s in zip(c_ins, sizes)))
    elif name == "nn.Upsample":
        f = a.get("scale_factor", 2)
        cost.op(c * size * size * (1 + f * f))
    elif name == "nn.MaxPool2d":
        out = (size + 2 * a.get("padding", 0) - a["kernel_size"]) // a.get("stride", 1) + 1
        cost.op(c * (size * size + out * out))
        cost.dw += c * out * out * a["kernel_size"] ** 2  # as a depthwise conv would
    elif name == "nn.BatchNorm2d":
        cost.op(2 * c * size * size)
    elif name == "nn.Identity":
        cost.op(0)
    else:
        raise ValueError(f"no cost model for module {name!r}")
    return cost.features()


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative w minimising |a w - b|: least squares with the columns that come out negative
    dropped one at a time (an active-set method; a handful of columns)."""
    scale = np.abs(a).max(axis=0)
    free = [j for j in range(a.shape[1]) if scale[j] > 0]  # a cost none of the blocks has: 0
    scale[scale == 0] = 1.0
    a = a / scale  # columns of comparable size for lstsq
    while True:
        w = np.zeros(a.shape[1])
        if free:
            w[free] = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
        negative = [j for j in free if w[j] < 0]
        if not negative:
            return w / scale
        free.remove(min(negative, key=lambda j: w[j]))


def _fit(x: np.ndarray, y: np.ndarray, steps: int = 12, delta: float = HUBER) -> np.ndarray:
    """Non-negative w for ms = x w, fitted on r = log(timed / predicted): the error in ratio, which
    weighs a fast and a slow block alike and does not pull predictions low as the plain relative
    error does (a whole model is a sum of blocks: a bias would add up). Robust: beyond `delta`
    (10%) a block's weight falls as 1/|r| (Huber), so that a block timed while the machine was busy
    (noise only adds time, sometimes 2x) does not drag its neighbours up. Iteratively reweighted
    Gauss-Newton from the relative fit; deterministic."""
    w = _nnls(x / y[:, None], np.ones(len(y)))
    for _ in range(steps):
        p = np.maximum(x @ w, 1e-3 * y)
        r = np.log(y / p)
        root = np.sqrt(np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-12)))
        w = _nnls(x / p[:, None] * root[:, None], (1 + r) * root)  # log(x w) ~ log p + (x w - p) / p
    return w


class BlockModel:
    """Block latency (ms) from its cost: one linear fit per module with enough timed blocks, and one
    over all modules for the others. Build it with `BlockModel.fit(table)`."""

    def __init__(self, coefs: dict[str, list[float]], n: int):
        self.coefs = coefs  # module name (or "*": all) -> weights of FEATURES + intercept
        self.n = n          # timed blocks fitted on (usable ones)
        self.fitted_on = n  # the size of the table it was fitted on (fit sets it)

    @classmethod
    def fit(cls, table: dict[str, float], min_blocks: int = MIN_BLOCKS) -> BlockModel:
        """Fit on timed blocks ({key: ms}); keys in sorted order so the model is the table's alone."""
        rows, by_module = [], {}
        for key in sorted(table):
            ms = float(table[key])
            if not (ms > 0 and math.isfinite(ms)):
                continue
            try:
                feats = block_cost(key)
            except (ValueError, KeyError, TypeError, IndexError):  # a key of another version's modules
                continue
            rows.append((feats + [1.0], ms))
            by_module.setdefault(json.loads(key)[0], []).append(len(rows) - 1)
        if not rows:
            raise ValueError("no timed blocks to fit the block model on")
        x, y = np.array([r for r, _ in rows]), np.array([ms for _, ms in rows])
        common = _fit(x, y)
        coefs = {"*": common.tolist()}
        for module, idx in sorted(by_module.items()):
            if len(idx) >= min_blocks:
                w = _fit(x[idx], y[idx])
                absent = ~x[idx].any(axis=0)
                w[absent] = common[absent]  # costs its blocks never had: the common rate
                coefs[module] = w.tolist()
            else:  # too few for a fit of its own: the common one, scaled to its blocks (geometric mean)
                ratio = np.exp(np.mean(np.log(y[idx] / np.maximum(x[idx] @ common, 1e-9))))
                coefs[module] = (common * ratio).tolist()
        model = cls(coefs, len(rows))
        model.fitted_on = len(table)
        return model

    def predict(self, key: str) -> float:
        """Predicted latency (ms) of the block `key`, timed or not."""
        w = self.coefs.get(json.loads(key)[0], self.coefs["*"])
        ms = float(np.dot(block_cost(key) + [1.0], w))
        return max(ms, 1e-6)
