"""Helpers the data tests share: iHarmony4-like triplets on disk and the frozen crop reference."""

from __future__ import annotations

import numpy as np
from PIL import Image

from giftnet.pipeline.augment import CropParams, random_resized_crop
from giftnet.pipeline.pairs import Pair

SHIFT = 100  # the composite is the real image plus SHIFT inside the foreground, equal outside


def write_triplets(root, n=12, seed=0):
    """iHarmony4-like triplets: smooth real JPEG, 0/255 PNG mask, composite changed only inside it.

    The foreground rectangle lies on the 8x8 JPEG block grid and the JPEGs are 4:4:4, so outside
    the mask the two JPEGs decode to identical pixels.
    """
    rng = np.random.default_rng(seed)
    for sub in ("composite_images", "masks", "real_images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    pairs = []
    for k in range(n):
        h, w = (int(v) for v in rng.integers(96, 161, size=2))
        low = Image.fromarray((rng.random((6, 6, 3)) * 120).astype(np.uint8))
        real = np.asarray(low.resize((w, h), Image.Resampling.BICUBIC)).clip(0, 120).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y0, x0 = 8 * int(rng.integers(0, h // 16)), 8 * int(rng.integers(0, w // 16))
        mask[y0 : y0 + 8 * int(rng.integers(3, 6)), x0 : x0 + 8 * int(rng.integers(3, 6))] = 255
        comp = real.copy()
        comp[mask > 0] += SHIFT
        name = f"s{k}_1_{k}"
        pair = Pair(
            root / "composite_images" / f"{name}.jpg",
            root / "masks" / f"s{k}_1.png",
            root / "real_images" / f"s{k}.jpg",
            "Synth",
            name,
        )
        Image.fromarray(comp).save(pair.composite, quality=95, subsampling=0)
        Image.fromarray(real).save(pair.real, quality=95, subsampling=0)
        Image.fromarray(mask).save(pair.mask)
        pairs.append(pair)
    return pairs


def reference_sample_crop(mask, *, crop_size, seed, epoch, index):
    """augment.sample_crop as it was before the index existed (a frozen copy: the reference)."""
    height, width = mask.shape
    for attempt in range(10):
        rng = np.random.default_rng(np.random.SeedSequence([0xC809, seed, epoch, index, attempt]))
        top, left, h, w = random_resized_crop(height, width, rng, (0.5, 1.0), (3.0 / 4.0, 4.0 / 3.0))
        flip = bool(rng.random() < 0.5)
        keep = bool(rng.random() < 0.05)
        window = mask[top : top + h, left : left + w]
        if keep or float(window.sum(dtype=np.int64)) / 255.0 * (crop_size * crop_size) / (h * w) > 1.0:
            return CropParams(top, left, h, w, flip)
    fg = np.flatnonzero(mask)
    if fg.size:
        y, x = divmod(int(fg[fg.size // 2]), mask.shape[1])
        top = min(max(y - h // 2, 0), mask.shape[0] - h)
        left = min(max(x - w // 2, 0), mask.shape[1] - w)
    return CropParams(top, left, h, w, flip)
