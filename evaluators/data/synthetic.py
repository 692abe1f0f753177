"""A built-in detection set that needs no download: coloured shapes on textured backgrounds.

Spec strings: `synthetic` or `synthetic:n=512,nc=4,seed=0,size=256` (keys below). Each class has
its own shape (rectangle, ellipse, triangle, cross, repeating) and its own hue, so the task is
learnable in a short proxy training; objects vary in scale (6-50 % of the image side) and aspect
ratio (1:3 to 3:1); backgrounds mix a muted tint, a gradient, stripes, blotches and grain.
Everything comes from one seed: train and val use independent random streams of it, so they
never share an image. Generated sets are cached per process.
"""
from __future__ import annotations

import colorsys
import functools
import math

import numpy as np

from nas.errors import UserError

from .images import fit
from .records import Report, Sample, Source

DEFAULTS = {"n": 256, "val": 64, "nc": 4, "seed": 0, "size": 320, "objects": 6}
LIMITS = {"n": (1, 100_000), "val": (1, 100_000), "nc": (1, 100), "seed": (0, 2**32 - 1),
          "size": (32, 2048), "objects": (1, 50)}
SPLITS = ("train", "val")
SHAPES = ("rectangle", "ellipse", "triangle", "cross")
_CHUNK = 16  # images whose float backgrounds are built at once (bounds memory)


def parse_spec(spec: str) -> dict:
    """'synthetic:n=512,nc=4' -> {'n': 512, 'nc': 4, ...defaults}. Bad keys or values -> UserError."""
    _, _, args = spec.partition(":")
    params = dict(DEFAULTS)
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, has_value, value = (s.strip() for s in item.partition("="))
        if key not in DEFAULTS:
            raise UserError(f"synthetic data: unknown key '{key}' (known: {', '.join(DEFAULTS)})")
        lo, hi = LIMITS[key]
        try:
            params[key] = int(value)
        except ValueError:
            params[key] = None
        if not has_value or params[key] is None or not lo <= params[key] <= hi:
            raise UserError(f"synthetic data: '{key}' must be an integer in {lo}..{hi}, got {value!r}")
    return params


def class_names(nc: int) -> list[str]:
    return [SHAPES[c % 4] + (f"-{c // 4 + 1}" if c >= 4 else "") for c in range(nc)]


def load_synthetic(spec: str, split: str, imgsz: int) -> Source:
    p = parse_spec(spec)
    if split not in SPLITS:
        raise UserError(f"synthetic data has splits {', '.join(SPLITS)}, not '{split}'")
    n = p["n"] if split == "train" else p["val"]
    images, boxes, labels = generate(n, p["nc"], p["seed"], p["size"], p["objects"], SPLITS.index(split))
    shape = (p["size"], p["size"])
    samples = [Sample(i, None, shape, boxes[i], labels[i]) for i in range(n)]
    return Source(f"{spec} {split}", class_names(p["nc"]), list(range(p["nc"])), samples,
                  [fit(im, imgsz) for im in images], Report())


@functools.lru_cache(maxsize=8)
def generate(n: int, nc: int, seed: int, size: int, objects: int, stream: int = 0):
    """n images (uint8 [n, size, size, 3], read-only), and per image boxes (float32 [k, 4] xyxy) and labels.

    `stream` picks an independent random stream of the seed (0 = train, 1 = val).
    """
    rng = np.random.default_rng([seed, stream])
    images = np.empty((n, size, size, 3), np.uint8)
    boxes, labels = [], []
    for start in range(0, n, _CHUNK):
        chunk = _backgrounds(rng, min(_CHUNK, n - start), size)  # float32 [b, 3, S, S]
        for canvas in chunk:
            b, c = _draw_objects(rng, canvas, nc, objects)
            boxes.append(b)
            labels.append(c)
        grain = rng.random((len(chunk), 1, size, size), dtype=np.float32) - 0.5  # on objects too
        grain *= rng.uniform(0, 24, (len(chunk), 1, 1, 1)).astype(np.float32)
        chunk += grain
        np.clip(chunk, 0, 255, out=chunk)
        images[start:start + len(chunk)] = chunk.transpose(0, 2, 3, 1)  # float -> uint8 on assignment
    images.setflags(write=False)
    for a in boxes + labels:
        a.setflags(write=False)
    return images, tuple(boxes), tuple(labels)


def _backgrounds(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    """Muted tint + linear gradient + stripes + low-frequency blotches, float32 [b, 3, S, S]."""
    f32 = np.float32
    t = (np.arange(size, dtype=f32) + 0.5) / size  # pixel centres in 0..1
    draw = lambda *shape, lo, hi: rng.uniform(lo, hi, shape).astype(f32)  # noqa: E731
    # Blotches: a coarse random grid, bilinearly upsampled by two matrix products.
    k = 5
    up = _upsample_matrix(k, size)
    canvas = up @ draw(b, 3, k, k, lo=-40, hi=40) @ up.T

    canvas += draw(b, 1, 1, 1, lo=70, hi=180) + draw(b, 3, 1, 1, lo=-25, hi=25)  # tint

    # Gradient (cos a * x + sin a * y - 0.5) * colour: a column term plus a row term, broadcast.
    angle, colour = draw(b, 1, 1, 1, lo=0, hi=2 * math.pi), draw(b, 3, 1, 1, lo=-80, hi=80)
    canvas += colour * np.cos(angle) * t[None, None, None, :]
    canvas += colour * (np.sin(angle) * t[None, None, :, None] - 0.5)

    # Stripes amp * sin(a*x + c*y + phase) = amp * (sin(ax) cos(cy) + cos(ax) sin(cy)): no sin() per pixel.
    freq = draw(b, 1, lo=3, hi=24) * f32(2 * math.pi)
    theta, phase = draw(b, 1, lo=0, hi=math.pi), draw(b, 1, lo=0, hi=2 * math.pi)
    amp = draw(b, 1, lo=0, hi=35) * (rng.random((b, 1)) < 0.5)
    ax, cy = freq * np.cos(theta) * t, freq * np.sin(theta) * t + phase  # [b, S] each
    stripes = (amp * np.sin(ax))[:, None, :] * np.cos(cy)[:, :, None]
    stripes += (amp * np.cos(ax))[:, None, :] * np.sin(cy)[:, :, None]
    canvas += stripes[:, None]
    return canvas


def _upsample_matrix(k: int, size: int) -> np.ndarray:
    """[size, k] linear-interpolation weights from k coarse cells to size pixels."""
    pos = np.clip((np.arange(size) + 0.5) * k / size - 0.5, 0, k - 1)
    lo = np.minimum(pos.astype(int), k - 2)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((size, k), np.float32)
    m[np.arange(size), lo] = 1 - w
    m[np.arange(size), lo + 1] += w
    return m


def _draw_objects(rng, canvas: np.ndarray, nc: int, max_objects: int):
    """Paint 1..max_objects shapes into canvas [3, S, S] in place; return their boxes and classes."""
    size = canvas.shape[-1]
    boxes, labels = [], []
    for _ in range(rng.integers(1, max_objects + 1)):
        cls = int(rng.integers(nc))
        for _attempt in range(10):  # find a place that hides little of the objects already drawn
            side = size * math.exp(rng.uniform(math.log(0.06), math.log(0.5)))
            aspect = math.exp(rng.uniform(-math.log(3), math.log(3)))
            w = min(max(round(side * math.sqrt(aspect)), 6), size - 2)
            h = min(max(round(side / math.sqrt(aspect)), 6), size - 2)
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = np.array([x, y, x + w, y + h], np.float32)
            if not boxes or _covered(box, np.array(boxes)).max() < 0.3:
                break
        else:
            continue
        mask = _shape_mask(cls % 4, h, w)
        canvas[:, y:y + h, x:x + w][:, mask] = _colour(rng, cls, nc)[:, None]
        boxes.append(box)
        labels.append(cls)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _colour(rng, cls: int, nc: int) -> np.ndarray:
    """The class's own saturated hue, slightly jittered per object."""
    hue = (cls / nc + rng.uniform(-0.1, 0.1) / max(nc, 4)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
    return np.array(rgb, np.float32) * 255


def _shape_mask(shape: int, h: int, w: int) -> np.ndarray:
    """Boolean [h, w] mask of a shape that touches all four sides of its box."""
    dx = np.abs(np.arange(w) + 0.5 - w / 2)[None, :]  # distance of pixel centres from the box centre
    dy = np.abs(np.arange(h) + 0.5 - h / 2)[:, None]
    if shape == 0:  # rectangle
        return np.ones((h, w), bool)
    if shape == 1:  # ellipse
        return (dx / (w / 2)) ** 2 + (dy / (h / 2)) ** 2 <= 1
    if shape == 2:  # triangle, apex up, base on the bottom edge
        half_width = (np.arange(h)[:, None] + 1) / h * w / 2
        return dx <= half_width + 0.5
    bar = 0.17  # cross: two bars, each a third of the box thick
    return (dx <= max(w * bar, 0.5)) | (dy <= max(h * bar, 0.5))


def _covered(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Fraction of each of `others` that `box` covers."""
    inter = np.prod(np.clip(np.minimum(box[2:], others[:, 2:]) - np.maximum(box[:2], others[:, :2]), 0, None), 1)
    return inter / np.prod(others[:, 2:] - others[:, :2], 1)
