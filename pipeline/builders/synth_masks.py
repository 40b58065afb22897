"""Procedural object masks for the demo dataset: ellipses, star-shaped blobs, polygons, organic noise blobs.

Masks are binary (0/255 when saved), cover 2-50% of the image like most iHarmony4 foregrounds, and
are drawn without anti-aliasing so the checker's binary test holds exactly.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

MASK_SHAPES = ("ellipse", "star_blob", "polygon", "noise_blob")
MIN_AREA, MAX_AREA = 0.02, 0.5


def _canvas(h: int, w: int, draw_fn) -> np.ndarray:
    image = Image.new("L", (w, h), 0)
    draw_fn(ImageDraw.Draw(image))
    return np.asarray(image) > 127


def _centre_and_radius(h: int, w: int, rng: np.random.Generator) -> tuple[float, float, float]:
    area = math.exp(rng.uniform(math.log(0.04), math.log(0.35)))  # target fraction of the image
    radius = math.sqrt(area * h * w / math.pi)
    cx = rng.uniform(0.2, 0.8) * w
    cy = rng.uniform(0.2, 0.8) * h
    return cx, cy, radius


def ellipse(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A rotated ellipse (drawn as a 64-gon so rotation is exact)."""
    cx, cy, radius = _centre_and_radius(h, w, rng)
    ratio = rng.uniform(0.4, 1.0)
    a, b, turn = radius / math.sqrt(ratio), radius * math.sqrt(ratio), rng.uniform(0, math.pi)
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x, y = a * np.cos(t), b * np.sin(t)
    xs = cx + x * math.cos(turn) - y * math.sin(turn)
    ys = cy + x * math.sin(turn) + y * math.cos(turn)
    return _canvas(h, w, lambda d: d.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255))


def star_blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth star-shaped outline: radius = r0 * (1 + sum of a few random low harmonics)."""
    cx, cy, radius = _centre_and_radius(h, w, rng)
    t = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 6):
        r += rng.uniform(0, 0.35 / k * 2) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    r = radius * np.clip(r, 0.3, None)
    xs, ys = cx + r * np.cos(t), cy + r * np.sin(t)
    return _canvas(h, w, lambda d: d.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255))


def polygon(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random simple polygon of 4-9 vertices (sorted angles, jittered radii): man-made object outlines."""
    cx, cy, radius = _centre_and_radius(h, w, rng)
    n = int(rng.integers(4, 10))
    t = np.sort(rng.uniform(0, 2 * math.pi, size=n))
    r = radius * rng.uniform(0.6, 1.4, size=n)
    xs, ys = cx + r * np.cos(t), cy + r * np.sin(t)
    return _canvas(h, w, lambda d: d.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255))


def noise_blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smoothed noise thresholded to a target area, keeping the largest connected piece: organic shapes."""
    area = math.exp(rng.uniform(math.log(0.05), math.log(0.35)))
    # smooth noise drawn at 1/8 resolution and upsampled bilinearly: the same look, 64x less filtering
    small_h, small_w = -(-h // 8), -(-w // 8)
    coarse = ndimage.gaussian_filter(
        rng.normal(size=(small_h, small_w)), sigma=max(small_h, small_w) / rng.uniform(6, 12)
    )
    noise = np.asarray(
        Image.fromarray(coarse.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64
    )
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    noise -= noise.std() * 8.0 * (((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2)  # favour one central piece
    mask = noise > np.quantile(noise, 1.0 - area)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


_DRAW = {"ellipse": ellipse, "star_blob": star_blob, "polygon": polygon, "noise_blob": noise_blob}


def random_mask(h: int, w: int, rng: np.random.Generator, attempts: int = 20) -> tuple[np.ndarray, str]:
    """A binary HxW object mask covering MIN_AREA..MAX_AREA of the image, and the shape's name."""
    for _ in range(attempts):
        shape = MASK_SHAPES[int(rng.integers(len(MASK_SHAPES)))]
        mask = _DRAW[shape](h, w, rng)
        if MIN_AREA <= mask.mean() <= MAX_AREA:
            return mask, shape
    raise RuntimeError(f"no mask with area in [{MIN_AREA}, {MAX_AREA}] after {attempts} draws at {h}x{w}")
