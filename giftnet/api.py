"""The Python API: load GiftNet weights and harmonise images held in memory.

    from giftnet.api import load_model, harmonize_array, read_image, read_mask

    model = load_model("giftnet.safetensors", device="cuda")   # eval mode
    out = harmonize_array(model, read_image("comp.jpg"), read_mask("mask.png"))   # HxWx3 uint8

`harmonize_array` does for one array what `python -m giftnet.harmonize` (giftnet-harmonize) does
for one file: the network runs at 256 x 256 and its change is carried back to the full size (or at
the full size with `full_res=True`); pixels where the mask is 0 are returned unchanged. Images of
any size are accepted. `read_image` / `read_mask` are the decoders the training and evaluation
loaders use (EXIF orientation, 16-bit, palette, CMYK handled the same way).

Mistakes in the arguments raise giftnet.errors.UsageError; an unusable weights file raises
giftnet.errors.WeightsError and an unreadable image giftnet.errors.DataError, each naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from giftnet import runtime
from giftnet.errors import UsageError
from giftnet.harmonize import harmonize_image
from giftnet.pipeline import images

__all__ = ["harmonize_array", "load_model", "read_image", "read_mask"]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A GiftNet model from a .safetensors weights file, on `device`, in eval mode.

    The file is checked tensor by tensor before use (safetensors only; nothing in it is executed).
    """
    return runtime.load_model(path, device)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, decoded as the loaders decode it."""
    return images.read_rgb(path)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as HxW float32 in [0, 1] (channel 0; alpha-only, 16-bit masks handled)."""
    return images.read_mask(path)


def _check_arrays(image: np.ndarray, mask: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise UsageError(f"image must be an HxWx3 uint8 numpy array, got {type(image).__name__} {shape}")
    if min(image.shape[:2]) < 1:
        raise UsageError(f"image is empty ({image.shape})")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UsageError(f"mask must be HxW, got shape {mask.shape}")
    if mask.dtype == np.uint8 or mask.dtype == np.bool_:
        return
    if not np.issubdtype(mask.dtype, np.floating):
        raise UsageError(f"mask must be uint8 (0-255), bool or float in [0, 1], got {mask.dtype}")
    if not np.isfinite(mask).all() or mask.min(initial=0) < 0 or mask.max(initial=0) > 1:
        raise UsageError("a float mask must lie in [0, 1] (divide an 8-bit mask by 255)")


def harmonize_array(
    model: nn.Module,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    size: int = 256,
    full_res: bool = False,
    precision: str = "fp32",
) -> np.ndarray:
    """Harmonise one composite: `image` HxWx3 uint8, `mask` HxW (uint8 0-255, bool, or float 0-1).

    Returns a new HxWx3 uint8 array of the same size. Runs on the model's device; the model's
    training mode is left as it was. A mask of another size is resized to the image with a
    MaskSizeWarning (it is usually the wrong file).
    """
    _check_arrays(image, mask)
    if not full_res and (size < 8 or size % 8):
        raise UsageError(f"size must be a positive multiple of 8, got {size}")
    device = runtime.model_device(model)
    runtime.autocast_context(device, precision)  # refuses an unsupported precision by name
    return harmonize_image(model, image, mask, size=size, full_res=full_res, device=device, precision=precision)
