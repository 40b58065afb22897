"""The tail of a sample, shared by both backends on the CPU: decoded pixels -> the batch's tensors.

Training (crop_tensors): the window is the crop giftnet.pipeline.augment drew (top, left, height,
width) as decoded pixels; this resizes it to the crop size (bilinear without antialiasing, cv2.INTER_LINEAR as iSSAM's
RandomResizedCrop; images in torch's fixed-point uint8 kernel, the mask in float) and mirrors it.
The DataLoader's workers run it on PIL's pixels, CPU-only DALI on its window decodes (DALI's own
CPU resize and normalise cost 4.6 ms per pair at 640 px against 3.2 ms for its decoding; this tail
about 1.5 ms), so both backends give the same batches wherever the decoders agree.

Evaluation (fixed_tensors): the whole image resized to a square by OpenCV's fixed-point
INTER_LINEAR, bit for bit (giftnet.pipeline.resize), as iSSAM's "Fixed256" resizes it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from giftnet.pipeline.resize import cv2_linear_resize_u8


def resize_linear(arr: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, C) array -> (C, size, size) float, bilinear without antialiasing.

    This is cv2.INTER_LINEAR, which iSSAM's albumentations pipeline (and so the paper) uses for
    both the training crops and the "Fixed256" evaluation resize; DALI's fn.resize with
    antialias=False computes the same.
    """
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


def resize_linear_u8(arr: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> uint8 (3, size, size): resize_linear in torch's fixed-point uint8 kernel.

    Four times faster than the float path and within one level of it; used for training crops.
    """
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


def soft_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (h, w) or (h, w, 1) mask -> (1, size, size) float in [0, 1], bilinear (it stays soft)."""
    return (resize_linear(mask.reshape(*mask.shape[:2], 1), size) / 255.0).clamp_(0.0, 1.0)


def crop_tensors(
    comp: np.ndarray,  # (h, w, 3) uint8: the composite's window
    real: np.ndarray,  # (h, w, 3) uint8: the real image's window
    mask: np.ndarray,  # (h, w) or (h, w, 1) uint8: the mask's window
    size: int,
    flip: bool,
) -> dict[str, torch.Tensor]:
    """composite and real (3, size, size) uint8, mask (1, size, size) float in [0, 1], mirrored if `flip`."""
    out = {
        "composite": resize_linear_u8(comp, size),
        "real": resize_linear_u8(real, size),
        "mask": soft_mask(mask, size),
    }
    if flip:
        out = {k: v.flip(-1) for k, v in out.items()}
    return out


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def fixed_tensors(
    comp: np.ndarray,  # (H, W, 3) uint8: the composite
    real: np.ndarray,  # (H, W, 3) uint8: the real image
    mask: np.ndarray,  # (H, W) or (H, W, 1) uint8: the mask
    size: int,
) -> dict[str, torch.Tensor]:
    """composite and real (3, size, size) uint8 as OpenCV resizes them, mask (1, size, size) float in [0, 1]."""
    return {
        "composite": _chw(cv2_linear_resize_u8(comp, size, size)),
        "real": _chw(cv2_linear_resize_u8(real, size, size)),
        "mask": soft_mask(mask, size),
    }
