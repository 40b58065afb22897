"""The network's input space: ImageNet mean/std normalisation of 0-255 images, and back.

Written once here for the loaders, evaluate, harmonize, the demo and the metrics. DALI applies the
same `MEAN_255` / `STD_255` inside its own crop_mirror_normalize.
"""

from __future__ import annotations

import torch

from giftnet.pipeline.pairs import IMAGENET_MEAN, IMAGENET_STD

MEAN_255 = tuple(255.0 * m for m in IMAGENET_MEAN)
STD_255 = tuple(255.0 * s for s in IMAGENET_STD)


def _per_channel(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=like.device, dtype=torch.float32).view(3, 1, 1)


def normalise(images_255: torch.Tensor) -> torch.Tensor:
    """uint8 or 0-255 float, (B, 3, H, W) or (3, H, W) -> float32 normalised with the ImageNet mean and std."""
    x = images_255.float()  # float64 too rounds to float32 first, as it always did
    return normalise_into(x, torch.empty_like(x))


def normalise_into(images_255: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """normalise, written into `out` (float32, the same shape): a batch slot filled without a stack."""
    mean, std = _per_channel(MEAN_255, images_255), _per_channel(STD_255, images_255)
    return torch.div(torch.sub(images_255, mean), std, out=out)


def to_255(image: torch.Tensor) -> torch.Tensor:
    """De-normalise an ImageNet-normalised image to float 0-255, clamped (not rounded)."""
    mean, std = _per_channel(IMAGENET_MEAN, image), _per_channel(IMAGENET_STD, image)
    return ((image.float() * std + mean) * 255.0).clamp(0.0, 255.0)
