"""Decoding image files (PIL + numpy), resized once to fit the training size and kept in memory.

Proxy training runs many short trainings on the same images, so each file is decoded and resized
once per process (`_FIT_CACHE`, keyed by path, modification time and size) and reused by every
dataset built on it afterwards.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .records import Report

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_EXIF_ORIENTATION = 0x0112
_FIT_CACHE: dict[tuple, np.ndarray] = {}


def clear_image_cache():
    """Forget every decoded image (they stay alive while a dataset holds them)."""
    _FIT_CACHE.clear()


def fit_shape(shape: tuple[int, int], imgsz: int) -> tuple[float, tuple[int, int]]:
    """Ratio and (h, w) that make the long side of an image of `shape` equal to imgsz."""
    h, w = shape
    r = imgsz / max(h, w)
    return r, (max(1, round(h * r)), max(1, round(w * r)))


def fit(image: np.ndarray, imgsz: int) -> np.ndarray:
    """Resize an HWC uint8 RGB image so its long side is imgsz (keeps the ratio)."""
    _, (h, w) = fit_shape(image.shape[:2], imgsz)
    if (h, w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def probe(path: Path) -> tuple[int, int]:
    """(h, w) of an image file after EXIF orientation, reading only its header. Raises OSError."""
    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated 90 degrees
            w, h = h, w
    return h, w


def decode_fit(path: Path, imgsz: int) -> np.ndarray:
    """Decode an image file to HWC uint8 RGB, EXIF-upright, its long side resized to imgsz. Raises OSError."""
    with Image.open(path) as im:
        _, (h, w) = fit_shape(im.size[::-1], imgsz)
        im.draft("RGB", (w, h))  # JPEG: decode at a reduced scale when that is enough (much faster)
        im = ImageOps.exif_transpose(im).convert("RGB")
        _, (h, w) = fit_shape(im.size[::-1], imgsz)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        return np.asarray(im)


def _cache_key(path: Path, imgsz: int) -> tuple:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size, imgsz


def cached_decode_fit(path: Path, imgsz: int) -> np.ndarray:
    """decode_fit through the per-process cache."""
    key = _cache_key(path, imgsz)
    image = _FIT_CACHE.get(key)
    if image is None:
        image = decode_fit(path, imgsz)
        image.setflags(write=False)  # shared by every dataset that uses it
        _FIT_CACHE[key] = image
    return image


def open_images(paths: list[Path], imgsz: int, cache: bool, report: Report):
    """Check every image; count and drop missing or undecodable ones.

    Returns a list of (index in paths, (h, w), fitted image or None) for the usable ones, in order. With
    cache=True each image is decoded now (threads: PIL releases the GIL while decoding), so a
    broken file is found here rather than in the middle of training; otherwise only headers are read.
    """
    def check(i: int):
        path = paths[i]
        try:
            shape = probe(path)
            return i, shape, cached_decode_fit(path, imgsz) if cache else None
        except FileNotFoundError:
            report.add("missing_image", f"{path}: image file not found")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            report.add("bad_image", f"{path}: cannot decode image ({type(e).__name__}: {e})")
        return None

    workers = min(8, os.cpu_count() or 1)
    if len(paths) < 16 or workers == 1:
        results = [check(i) for i in range(len(paths))]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(check, range(len(paths))))
    return [r for r in results if r is not None]
