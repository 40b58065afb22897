"""Evaluation metrics of iSSAM's "Fixed256" protocol, per image, on the 0-255 scale.

MSE   = mean over H, W, C of (pred - gt)^2
fMSE  = sum(mask * (pred - gt)^2) / (3 * sum(mask))
PSNR  = 10 log10(peak^2 / MSE), peak = gt.max() per image (iSSAM's convention) or 255
fSSIM = SSIM map (7x7 Gaussian window, sigma 1.5) averaged over the mask per channel, then
        over channels (CDTNet's foreground SSIM)
Inputs: pred, gt (B, 3, H, W) float in [0, 255]; mask (B, 1, H, W) in [0, 1] (soft edges allowed).
Each function returns a (B,) float64 tensor; a table row is the mean over its images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from giftnet.blocks import gaussian_kernel
from giftnet.imagenet import to_255

EPS = 1e-6
__all__ = ["fmse", "fssim", "image_metrics", "mse", "psnr", "ssim_map", "to_255"]


def _check(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if pred.shape != gt.shape or pred.dim() != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be (B, C, H, W)")
    if mask is not None and tuple(mask.shape) != (pred.shape[0], 1, *pred.shape[2:]):
        raise ValueError(f"mask must be (B, 1, H, W) matching pred, got {tuple(mask.shape)}")


def mse(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    _check(pred, gt)
    return (pred.double() - gt.double()).square().mean(dim=(1, 2, 3))


def fmse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Foreground MSE; 0 for an empty mask (there is no foreground to be wrong about)."""
    _check(pred, gt, mask)
    m = mask.double()
    err = (m * (pred.double() - gt.double()).square()).sum(dim=(1, 2, 3))
    return err / (pred.shape[1] * m.sum(dim=(1, 2, 3))).clamp_min(EPS)


def psnr(pred: torch.Tensor, gt: torch.Tensor, peak: str = "max") -> torch.Tensor:
    """PSNR per image; peak "max" uses gt.max() per image (iSSAM), "255" the full range."""
    if peak not in ("max", "255"):
        raise ValueError(f"peak must be 'max' or '255', got {peak!r}")
    top = gt.double().amax(dim=(1, 2, 3)) if peak == "max" else torch.full_like(mse(pred, gt), 255.0)
    return 10.0 * torch.log10(top.square() / (mse(pred, gt) + EPS))


def ssim_map(pred: torch.Tensor, gt: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of 0-255 images (zero padding, constants for range 255)."""
    _check(pred, gt)
    x, y = pred.double(), gt.double()
    c = x.shape[1]
    k = gaussian_kernel(window, sigma, torch.float64).to(x.device).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, padding=window // 2, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))


def fssim(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Foreground SSIM; 1 for an empty mask."""
    _check(pred, gt, mask)
    m = mask.double()
    area = m.sum(dim=(2, 3))  # (B, 1)
    per_channel = (ssim_map(pred, gt) * m).sum(dim=(2, 3)) / area.clamp_min(EPS)
    per_channel = torch.where(area > 0, per_channel, torch.ones_like(per_channel))
    return per_channel.mean(dim=1)


def image_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """All four metrics per image: {"mse", "fmse", "psnr", "fssim"} of (B,) tensors."""
    return {"mse": mse(pred, gt), "fmse": fmse(pred, gt, mask), "psnr": psnr(pred, gt), "fssim": fssim(pred, gt, mask)}
