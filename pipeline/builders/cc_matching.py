"""ccHarmony polynomial matching (docs/data.md, "ccHarmony"): the colour maths the builders share.

A colour (r, g, b) on 0-255 has 11 polynomial terms [r, g, b, rg, rb, gb, r^2, g^2, b^2, rgb, 1].
A 3x11 matrix T maps terms to colours: fit by least squares from the 24 ColorChecker patches.
T_a maps photo a's colours to the standard illumination, T'_b (the "reverse" matrix of photo b)
maps standard colours to b's illumination; a composite's foreground is T'_b(T_a(foreground of a)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from giftnet.pipeline.pairs import DatasetError

# sRGB ColorChecker 2005 values in the released dataset's patch order (white first).
STANDARD_PATCHES = np.array(
    [
        (245, 245, 243), (200, 202, 202), (161, 163, 163), (121, 121, 122), (82, 84, 86), (49, 49, 51),
        (35, 63, 147), (67, 149, 74), (180, 49, 57), (238, 198, 20), (193, 84, 151), (0, 136, 170),
        (224, 124, 47), (68, 91, 170), (198, 82, 97), (94, 58, 106), (159, 189, 63), (230, 162, 39),
        (116, 81, 67), (199, 147, 129), (91, 122, 156), (90, 108, 64), (130, 128, 176), (92, 190, 172),
    ],
    dtype=np.float64,
)  # fmt: skip
N_TERMS = 11
_CHUNK = 1 << 20  # pixels per block in apply_polynomial: 11 float64 terms of 1M pixels = 88 MB


def poly_terms(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) colours on 0-255 -> (..., 11) terms [r, g, b, rg, rb, gb, r^2, g^2, b^2, rgb, 1] in float64."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"rgb must have a last axis of 3, got shape {rgb.shape}")
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([r, g, b, r * g, r * b, g * b, r * r, g * g, b * b, r * g * b, np.ones_like(r)], axis=-1)


def fit_polynomial(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x11 matrix T minimising ||poly_terms(src) @ T.T - dst||^2 over the patches (least squares)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or dst.shape != src.shape:
        raise ValueError(f"src and dst must both be (N, 3), got {src.shape} and {dst.shape}")
    if src.shape[0] < N_TERMS:
        raise ValueError(f"need at least {N_TERMS} colour pairs to fit {N_TERMS} terms, got {src.shape[0]}")
    solution, *_ = np.linalg.lstsq(poly_terms(src), dst, rcond=None)
    return solution.T.copy()


def _check_matrix(T: np.ndarray, name: str = "T") -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (3, N_TERMS):
        raise ValueError(f"{name} must be a (3, {N_TERMS}) polynomial matrix, got shape {T.shape}")
    return T


def apply_polynomial(image: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Map colours (..., 3) on 0-255 through T; float64 clipped to 0-255 (processed in blocks for big photos)."""
    T = _check_matrix(T)
    image = np.asarray(image)
    if image.shape[-1:] != (3,):
        raise ValueError(f"image must have a last axis of 3, got shape {image.shape}")
    flat = image.reshape(-1, 3)
    out = np.empty(flat.shape, dtype=np.float64)
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start : start + _CHUNK]
        out[start : start + _CHUNK] = poly_terms(block) @ T.T
    np.clip(out, 0.0, 255.0, out=out)
    return out.reshape(image.shape)


def transfer(image_a_fg: np.ndarray, T_a: np.ndarray, T_b_reverse: np.ndarray) -> np.ndarray:
    """Foreground colours of photo a re-lit as photo b: T'_b(T_a(x)), each step clipped to 0-255, rounded to uint8.

    The intermediate is clipped because it is an image in the standard illumination (0-255), as in
    the paper's Figure 2(b).
    """
    T_a = _check_matrix(T_a, "T_a")
    T_b_reverse = _check_matrix(T_b_reverse, "T_b_reverse")
    standard = apply_polynomial(image_a_fg, T_a)
    return np.rint(apply_polynomial(standard, T_b_reverse)).astype(np.uint8)


def read_patch_csv(path: str | Path) -> np.ndarray:
    """A released patch-colour CSV: 24 rows of R,G,B (0-255) -> (24, 3) float64; DatasetError naming the file."""
    path = Path(path)
    try:
        rows = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        values = np.array([[float(v) for v in row.split(",")] for row in rows], dtype=np.float64)
    except FileNotFoundError:
        raise DatasetError(f"{path}: patch-colour file does not exist") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a CSV of numbers ({err})") from None
    if values.shape != (24, 3):
        raise DatasetError(f"{path}: expected 24 rows of R,G,B, got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255.5:
        raise DatasetError(f"{path}: patch colours must be finite values on 0-255")
    return values


def matrices_from_patches(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, T_reverse) of a photo from its 24 patch colours: photo -> standard and standard -> photo."""
    return fit_polynomial(patches, STANDARD_PATCHES), fit_polynomial(STANDARD_PATCHES, patches)


def load_matrix(path: str | Path) -> np.ndarray:
    """A released `IMAGE.npy` / `IMAGE_reverse.npy` 3x11 matrix; DatasetError naming the file."""
    try:
        matrix = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot load a polynomial matrix ({err})") from None
    if matrix.shape != (3, N_TERMS):
        raise DatasetError(f"{path}: expected a (3, {N_TERMS}) matrix, got shape {matrix.shape}")
    return matrix.astype(np.float64)
