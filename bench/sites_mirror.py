"""Snapshots of code the site model traces, kept here so the model keeps working while kernels/
and bench/ are restructured: the grouped baseline. tests/test_bench_sites.py checks it against
the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_modconv2d_grouped(
    x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """giftnet.bench.kernels_modconv's grouped baseline: per-sample weights W''_b, one grouped conv."""
    b, c, h, w = x.shape
    m = mask.to(x.dtype)
    wb = weight.float()[None] * style.float()[:, None, :, None, None]
    wb = wb * torch.rsqrt(wb.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
    y = F.conv2d((x * m).reshape(1, b * c, h, w), wb.reshape(b * c, c, 3, 3).to(x.dtype), padding=1, groups=b)
    return m * y.view(b, c, h, w) + (1 - m) * x
