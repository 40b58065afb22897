"""Masked modulated-demodulated 3x3 convolution: argument checks and the pure-PyTorch reference.

    y = m * conv3x3(m * x, W''_b, padding=1) + (1 - m) * x
    W''_b[o, i, k] = W[o, i, k] * s[b, i] * d[b, o]
    d[b, o]       = rsqrt(sum_{i,k} (W[o, i, k] * s[b, i])^2 + eps)      (when demodulating)

The reference never builds per-sample weights: conv(x * s, W) = conv(x, W * s), and the
demodulation is a per-(sample, output channel) scale applied after the convolution
(the scale-conv-scale form of StyleGAN2). Coefficients are computed in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OP = "masked_modconv2d"


def check_modconv_args(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise ValueError naming the offending argument when shapes do not fit together."""
    if x.dim() != 4:
        raise ValueError(f"{OP}: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if tuple(weight.shape) != (c, c, 3, 3):
        raise ValueError(f"{OP}: weight must be ({c}, {c}, 3, 3) for x with {c} channels, got {tuple(weight.shape)}")
    if tuple(style.shape) != (b, c):
        raise ValueError(f"{OP}: style must be ({b}, {c}), got {tuple(style.shape)}")
    if tuple(mask.shape) != (b, 1, h, w):
        raise ValueError(f"{OP}: mask must be ({b}, 1, {h}, {w}), got {tuple(mask.shape)}")
    for name, t in (("weight", weight), ("style", style), ("mask", mask)):
        if t.device != x.device:
            raise ValueError(f"{OP}: {name} is on {t.device} but x is on {x.device}")
        if not t.is_floating_point():
            raise ValueError(f"{OP}: {name} must be a floating-point tensor, got {t.dtype}")
    if not x.is_floating_point():
        raise ValueError(f"{OP}: x must be a floating-point tensor, got {x.dtype}")


def demodulation_coefficients(weight: torch.Tensor, style: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """d[b, o] = rsqrt(sum_{i,k} (W[o,i,k] s[b,i])^2 + eps), in fp32 (or fp64), shape (B, C_out)."""
    dtype = torch.promote_types(torch.promote_types(weight.dtype, style.dtype), torch.float32)
    w2 = weight.to(dtype).square().sum(dim=(2, 3))  # (C_out, C_in)
    return torch.rsqrt(style.to(dtype).square() @ w2.t() + eps)


def masked_modconv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    mask: torch.Tensor,
    *,
    demodulate: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Pure-PyTorch masked modulated convolution (same signature as the kernel, minus impl)."""
    dtype = x.dtype
    m = mask.to(dtype)
    xs = (x * m) * style.to(dtype)[:, :, None, None]
    y = F.conv2d(xs, weight.to(dtype), padding=1)
    if demodulate:
        y = y * demodulation_coefficients(weight, style, eps).to(y.dtype)[:, :, None, None]
    return m * y + (1 - m) * x
