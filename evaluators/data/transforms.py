"""Letterbox and light augmentation: from a fitted image (long side = S) to an S x S training input.

Geometry: letterboxed = original * ratio + pad, so original = (letterboxed - pad) / ratio, with
pad = (left, top). Boxes are xyxy in pixel-edge coordinates (a box over pixels 0..9 ends at 10),
so a horizontal flip maps x to width - x.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 114


@dataclass(frozen=True)
class Augment:
    """Light augmentation for short proxy trainings (all off = plain letterbox)."""

    flip: float = 0.5  # probability of a horizontal flip
    scale: float = 0.25  # zoom drawn from 1 +- scale
    translate: float = 0.1  # shift of up to this fraction of the image size, each axis
    hsv: tuple[float, float, float] = (0.015, 0.5, 0.3)  # hue (fraction of a turn), saturation, value gains
    min_size: float = 2.0  # boxes narrower or lower than this (pixels) after the transform are dropped
    min_visible: float = 0.2  # ... and boxes with less of their area left inside the image


def letterbox(image: np.ndarray, boxes: np.ndarray, shape: tuple[int, int], imgsz: int,
              rng: np.random.Generator | None = None, aug: Augment | None = None):
    """Place a fitted HWC image on an imgsz x imgsz canvas of grey 114, centred (plus jitter if aug).

    image: HWC uint8 RGB, long side imgsz (see images.fit); boxes: [N, 4] xyxy original pixels of an
    image of `shape` (h, w). Returns (canvas uint8 [3, S, S], boxes [M, 4] float32 canvas pixels,
    keep bool [N] (which boxes survived), ratio, (left, top), flipped).
    """
    s = imgsz
    ratio = s / max(shape)
    flipped = False
    if aug is not None:
        image, ratio, flipped = _jitter(image, ratio, rng, aug)
    h, w = image.shape[:2]
    left, top = (s - w) // 2, (s - h) // 2
    if aug is not None:
        left += round(rng.uniform(-aug.translate, aug.translate) * s)
        top += round(rng.uniform(-aug.translate, aug.translate) * s)

    canvas = np.full((3, s, s), PAD_VALUE, np.uint8)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + w, s), min(top + h, s)  # visible part
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = image[y0 - top:y1 - top, x0 - left:x1 - left].transpose(2, 0, 1)

    out = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(ratio)
    if flipped:
        out[:, [0, 2]] = w - out[:, [2, 0]]
    out += np.array([left, top, left, top], np.float32)
    clipped = out.clip(0, s)  # without jitter this only trims rounding (< 1 px)
    keep = np.ones(len(out), bool)
    if aug is not None:  # drop boxes that became tiny or mostly left the image
        cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
        keep = (cw >= aug.min_size) & (ch >= aug.min_size) & (cw * ch >= aug.min_visible * area)
    return canvas, clipped[keep], keep, ratio, (left, top), flipped


def _jitter(image: np.ndarray, ratio: float, rng: np.random.Generator, aug: Augment):
    """HSV jitter, random zoom and flip of a fitted image: (image, new ratio, flipped)."""
    im = Image.fromarray(image)
    if any(aug.hsv):
        im = _hsv_jitter(im, rng, aug.hsv)
    if aug.scale:
        zoom = rng.uniform(1 - aug.scale, 1 + aug.scale)
        size = (max(1, round(im.width * zoom)), max(1, round(im.height * zoom)))
        ratio *= size[0] / im.width if im.width >= im.height else size[1] / im.height
        im = im.resize(size, Image.BILINEAR)
    flipped = bool(rng.random() < aug.flip)
    if flipped:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im), ratio, flipped


def _hsv_jitter(im: Image.Image, rng: np.random.Generator, gains) -> Image.Image:
    """Rotate hue, scale saturation and value by random factors within +-gains.

    All three are linear maps of RGB (hue: rotation about the grey axis; saturation: blend with
    luminance; value: scale), so one 3x3 colour matrix applied by PIL does it, far faster than a
    round trip through HSV.
    """
    dh, ds, dv = rng.uniform(-1, 1, 3) * np.asarray(gains)
    luma = np.array([0.213, 0.715, 0.072])  # the weights of the SVG/CSS hue-rotate and saturate filters
    grey = np.tile(luma, (3, 1))
    cos, sin = np.cos(dh * 2 * np.pi), np.sin(dh * 2 * np.pi)
    hue = grey + cos * (np.eye(3) - grey) + sin * np.array([[-0.213, -0.715, 0.928],
                                                            [0.143, 0.140, -0.283],
                                                            [-0.787, 0.715, 0.072]])
    saturation = grey + (1 + ds) * (np.eye(3) - grey)
    matrix = (1 + dv) * saturation @ hue
    return im.convert("RGB", tuple(np.hstack([matrix, np.zeros((3, 1))]).ravel()))
