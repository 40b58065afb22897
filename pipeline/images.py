"""Image I/O for the readers, builders and checker: every failure becomes a DatasetError naming the file.

Photos are returned as uint8 RGB whatever their mode (grayscale, palette, CMYK, RGBA, 16-bit) and
masks as float32 in [0, 1] taken from channel 0 (the iHarmony4 convention, "channel 0 / 255").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.pairs import DatasetError

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image, so truncation is found here and not in a worker later."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err})") from None
    if size == 0:
        raise DatasetError(f"{path}: file is empty (0 bytes)")
    try:
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow reports a cut-off JPEG/PNG as OSError("image file is truncated ...").
        raise DatasetError(f"{path}: unreadable or truncated image ({err})") from None
    return image


def _sixteen_to_eight(array: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit (or 32-bit integer holding 16-bit) array to 0-255."""
    top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
    return np.clip(np.rint(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB from any Pillow mode; alpha is dropped (iHarmony4 photos carry none)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = _sixteen_to_eight(np.asarray(image), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")  # L, LA, P, PA, 1, CMYK (Adobe inverted handled by Pillow), RGBA, YCbCr
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a photo as HxWx3 uint8 RGB; DatasetError naming the file if it cannot be decoded."""
    image = open_image(path)
    try:
        return to_rgb(image)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot convert {image.mode} image to RGB ({err})") from None


def mask_channels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour channels HxWxC as float in 0-1, alpha HxW in 0-1 or None) of a mask image."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.float32)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        return (array / top)[:, :, None], None
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        top = 255.0 if array.max(initial=0) > 1.0 else 1.0
        return (array / top)[:, :, None], None
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.float32)[:, :, None] / 255.0, None
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode == "CMYK":
        image, mode = image.convert("RGB"), "RGB"
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        return array[:, :, None], None
    if mode in ("LA", "RGBA", "La", "RGBa"):
        return array[:, :, :-1], array[:, :, -1]
    return array, None


def mask_from_channels(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The mask: colour channel 0, except an alpha-only mask (constant colour, varying alpha) uses alpha."""
    first = colour[:, :, 0]
    if alpha is not None and np.ptp(first) == 0 and np.ptp(alpha) > 0:
        return np.ascontiguousarray(alpha, dtype=np.float32)
    return np.ascontiguousarray(first, dtype=np.float32)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a foreground mask as HxW float32 in [0, 1] (channel 0 / 255; 16-bit and alpha handled)."""
    image = open_image(path)
    try:
        colour, alpha = mask_channels(image)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read {image.mode} mask ({err})") from None
    return mask_from_channels(colour, alpha)


JPEG_QUALITY = 95


def write_jpeg(path: str | Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Save HxWx3 uint8 as JPEG with 4:4:4 chroma, so re-encoding differences stay in 8x8 blocks.

    Pillow's encoder is deterministic: the same array gives the same bytes, which the builders rely on.
    """
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(
        path, format="JPEG", quality=quality, subsampling=0
    )


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Save a boolean (or 0-1) HxW mask as an 8-bit single-channel PNG of 0 and 255."""
    binary = np.where(np.asarray(mask) > 0.5, 255, 0).astype(np.uint8)
    Image.fromarray(binary, "L").save(path, format="PNG")
