"""Foreground colour changes that turn a real photo into a synthetic composite.

iHarmony4 kind (Cong et al., DoveNet): Lab colour-statistics transfer toward another image's region,
histogram matching toward it, and tone changes (gamma, contrast curve, brightness, saturation).
ccHarmony kind: polynomial illumination transfer T'_b(T_a(x)) with released matrices bundled in
pipeline/data/ccharmony. Each function maps foreground pixels (N, 3) uint8 -> (N, 3) uint8.
"""

from __future__ import annotations

import functools
import warnings
from importlib import resources

import numpy as np
from skimage.color import lab2rgb, rgb2lab

from giftnet.pipeline.builders.cc_matching import transfer

CHANGE_KINDS = ("lab_transfer", "histogram", "tone", "illumination")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _lab(pixels: np.ndarray) -> np.ndarray:
    return rgb2lab(pixels.reshape(-1, 1, 3).astype(np.float64) / 255.0).reshape(-1, 3)


def lab_transfer(fg: np.ndarray, ref: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Reinhard-style transfer: match the foreground's Lab mean and std to the reference region's."""
    lab, ref_lab = _lab(fg), _lab(ref)
    mean, std = lab.mean(0), lab.std(0) + 1e-6
    ref_mean, ref_std = ref_lab.mean(0), ref_lab.std(0) + 1e-6
    moved = (lab - mean) * (ref_std / std) + ref_mean
    mixed = (1.0 - strength) * lab + strength * moved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lab2rgb warns when it clips out-of-gamut colours, as intended here
        rgb = lab2rgb(mixed.reshape(-1, 1, 3)).reshape(-1, 3)
    return _to_uint8(rgb * 255.0)


def histogram_match(fg: np.ndarray, ref: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Per-channel histogram matching of the foreground to the reference region (quantile mapping)."""
    out = np.empty(fg.shape, dtype=np.float64)
    for c in range(3):
        values, inverse, counts = np.unique(fg[:, c], return_inverse=True, return_counts=True)
        quantiles = (np.cumsum(counts) - 0.5 * counts) / fg.shape[0]
        ref_sorted = np.sort(ref[:, c]).astype(np.float64)
        ref_quantiles = (np.arange(ref_sorted.size) + 0.5) / ref_sorted.size
        mapped = np.interp(quantiles, ref_quantiles, ref_sorted)
        out[:, c] = (1.0 - strength) * values[inverse] + strength * mapped[inverse]
    return _to_uint8(out)


def tone_change(fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma (global and per channel), S or inverse-S contrast curve, brightness and saturation."""
    x = fg.astype(np.float64) / 255.0
    gamma = np.exp(rng.normal(0.0, 0.3)) * np.exp(rng.normal(0.0, 0.08, size=3))
    x = x**gamma
    k = rng.uniform(-0.6, 0.6)  # contrast curve: x + k * x(1-x)(2x-1) stays monotone for |k| < 1
    x = x + k * x * (1.0 - x) * (2.0 * x - 1.0)
    x = x * np.exp(rng.normal(0.0, 0.2)) + rng.normal(0.0, 0.04)
    luma = x @ np.array([0.299, 0.587, 0.114])
    x = luma[:, None] + (x - luma[:, None]) * rng.uniform(0.3, 1.7)
    return _to_uint8(x * 255.0)


@functools.cache
def bundled_matrices() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Photo name -> (T, T_reverse) of the released ccHarmony matrices shipped with the package."""
    folder = resources.files("giftnet.pipeline") / "data" / "ccharmony"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".npy") and not entry.name.endswith("_reverse.npy"):
            stem = entry.name[: -len(".npy")]
            with entry.open("rb") as f_forward, (folder / f"{stem}_reverse.npy").open("rb") as f_reverse:
                out[stem] = (np.load(f_forward, allow_pickle=False), np.load(f_reverse, allow_pickle=False))
    if len(out) < 2:
        raise RuntimeError(f"{folder}: the package data of ccHarmony matrices is missing (reinstall the package)")
    return out


def illumination_transfer(fg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """ccHarmony kind: T'_b(T_a(fg)) for two different bundled photos a, b; returns (pixels, 'a->b')."""
    matrices = bundled_matrices()
    names = sorted(matrices)
    a, b = rng.choice(len(names), size=2, replace=False)
    return transfer(fg, matrices[names[a]][0], matrices[names[b]][1]), f"{names[a]}->{names[b]}"


def change_foreground(fg: np.ndarray, ref: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Apply one change of `kind` (see CHANGE_KINDS); returns new pixels and a short description."""
    if kind == "lab_transfer":
        strength = rng.uniform(0.6, 1.0)
        return lab_transfer(fg, ref, strength), f"lab_transfer strength={strength:.2f}"
    if kind == "histogram":
        strength = rng.uniform(0.6, 1.0)
        return histogram_match(fg, ref, strength), f"histogram strength={strength:.2f}"
    if kind == "tone":
        return tone_change(fg, rng), "tone"
    if kind == "illumination":
        pixels, what = illumination_transfer(fg, rng)
        return pixels, f"illumination {what}"
    raise ValueError(f"kind must be one of {CHANGE_KINDS}, got {kind!r}")
