"""Helpers the data tests share: iHarmony4-like triplets on disk and the frozen crop reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from giftnet.pipeline.augment import CropParams, random_resized_crop
from giftnet.pipeline.pairs import Pair

ROOT = Path(__file__).resolve().parent.parent
SHIFT = 100  # the composite is the real image plus SHIFT inside the foreground, equal outside


def make_subset_folders(root):
    """The three folders of an iHarmony4 subset under `root`."""
    for sub in ("composite_images", "masks", "real_images"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def write_triplets(root, n=12, seed=0):
    """iHarmony4-like triplets: smooth real JPEG, 0/255 PNG mask, composite changed only inside it.

    The foreground rectangle lies on the 8x8 JPEG block grid and the JPEGs are 4:4:4, so outside
    the mask the two JPEGs decode to identical pixels.
    """
    rng = np.random.default_rng(seed)
    make_subset_folders(root)
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


def write_object_photos(folder: Path, n: int = 24) -> Path:
    """n photos with masks (>= 20: the split holds out whole photos): smooth colour fields, each
    with one elliptic object of another colour."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    for i in range(n):
        base = rng.uniform(40, 200, 3) + 40 * np.stack([xx, yy, xx * yy], -1)
        cy, cx, ry, rx = (
            rng.uniform(0.35, 0.65),
            rng.uniform(0.35, 0.65),
            rng.uniform(0.15, 0.3),
            rng.uniform(0.15, 0.3),
        )
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        image = np.where(mask[..., None], rng.uniform(30, 230, 3) + 30 * yy[..., None], base)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / "images" / f"p{i:02d}.jpg", quality=95)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"p{i:02d}.png")
    return folder


def tiny_recipe(path: Path) -> Path:
    """configs/realphoto.json shrunk to seconds: 8 + 6 composites of 32 px, one epoch per stage."""
    recipe = json.loads((ROOT / "configs" / "realphoto.json").read_text())
    recipe["data"] |= {"n_train": 8, "n_val": 6, "size": 32}
    recipe["train"] |= {"epochs": 1, "teacher_epochs": 1, "batch_size": 4, "crop_size": 16, "eval_size": 16,
                        "workers": 0, "log_every": 1, "ckpt_every": 1,
                        "model": {"base_channels": 8}}  # fmt: skip
    recipe["eval"] = {"size": 32, "batch_size": 4}
    path.write_text(json.dumps(recipe))
    return path


def write_subset(root, n=6, seed=0):
    """One IHD-layout subset folder of n noise photos of 40-89 px with a rectangle mask each."""
    rng = np.random.default_rng(seed)
    make_subset_folders(root)
    pairs = []
    for k in range(n):
        h, w = (int(v) for v in rng.integers(40, 90, size=2))
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : h // 2, w // 4 : w // 2] = 255
        pair = Pair(root / "composite_images" / f"a{k}_1_1.jpg", root / "masks" / f"a{k}_1.png",
                    root / "real_images" / f"a{k}.jpg", "Sub", f"a{k}_1_1")  # fmt: skip
        Image.fromarray(img).save(pair.composite)
        Image.fromarray(img).save(pair.real)
        Image.fromarray(mask).save(pair.mask)
        pairs.append(pair)
    return pairs
