"""Triplets for the data benchmark: synthetic (CI) or real photos resized to iHarmony4's sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from giftnet.pipeline import images as images_io
from giftnet.pipeline.pairs import Pair


def _dirs(root: Path) -> list[Path]:
    dirs = [root / "Bench" / d for d in ("composite_images", "masks", "real_images")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _save(dirs: list[Path], k: int, comp: np.ndarray, mask: Image.Image, real: np.ndarray) -> Pair:
    name = f"b{k}_1"
    pair = Pair(dirs[0] / f"{name}_1.jpg", dirs[1] / f"{name}.png", dirs[2] / f"b{k}.jpg", "Bench", f"{name}_1")
    Image.fromarray(comp).save(pair.composite, quality=90)
    mask.save(pair.mask)
    Image.fromarray(real).save(pair.real, quality=90)
    return pair


def _recolour(real: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An iHarmony4-style composite: the foreground's colours changed, the background kept."""
    comp = real.copy()
    comp[fg] = np.clip(comp[fg] * rng.uniform(0.6, 1.4, 3) + rng.uniform(-30, 30, 3), 0, 255).astype(np.uint8)
    return comp


def make_triplets(root: Path, n: int, *, min_side: int, max_side: int, seed: int = 0) -> list[Pair]:
    """n photo-like JPEG triplets in the iHarmony4 layout: smooth scene plus grain, an ellipse mask."""
    rng = np.random.default_rng(seed)
    dirs = _dirs(root)
    pairs = []
    for k in range(n):
        h, w = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        low = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        real = np.clip(np.asarray(low, np.float32) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        mask = Image.new("L", (w, h))
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        rx, ry = w * rng.uniform(0.1, 0.3), h * rng.uniform(0.1, 0.3)
        ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        pairs.append(_save(dirs, k, _recolour(real, np.asarray(mask) > 0, rng), mask, real))
    return pairs


def from_photos(photos: Path, root: Path, n: int, *, long_side: int | None, seed: int = 0) -> list[Pair]:
    """n triplets from `photos/images/*.jpg` + `photos/masks/*.png`, resized to `long_side` px
    (None: at their own size).

    The photo is resized bicubically and its mask by nearest neighbour (staying 0/255), then the
    composite gets a recoloured foreground. Photos are reused in turn when n exceeds their count.
    """
    images = sorted((photos / "images").glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"{photos}/images holds no .jpg photos")
    rng = np.random.default_rng(seed)
    dirs = _dirs(root)
    pairs = []
    for k in range(n):
        src = images[k % len(images)]
        photo = Image.fromarray(images_io.read_rgb(src), "RGB")
        mask = Image.fromarray(
            np.rint(images_io.read_mask(photos / "masks" / f"{src.stem}.png") * 255).astype(np.uint8), "L"
        )
        scale = 1.0 if long_side is None else long_side / max(photo.size)
        size = (round(photo.width * scale), round(photo.height * scale))
        real = np.asarray(photo.resize(size, Image.Resampling.BICUBIC))
        mask = mask.resize(size, Image.Resampling.NEAREST)
        pairs.append(_save(dirs, k, _recolour(real, np.asarray(mask) > 127, rng), mask, real))
    return pairs
