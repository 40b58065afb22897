"""Snapshots of code the site model traces, kept here so the model keeps working while kernels/
and bench/ are restructured: the torch math of today's modconv backward, and the grouped
baseline. tests/test_bench_sites.py checks each against the original while that still exists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weight_style_grads_mirror(
    corr: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, d: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """giftnet.kernels.masked_modconv_bwd.weight_style_grads, demodulated case (style as fp32, as the
    autograd function passes it)."""
    s = style.detach().float()
    w9 = weight.detach().float().permute(2, 3, 0, 1)
    w9 = w9.reshape(9, *w9.shape[2:])
    wg = (corr * w9).sum(1)
    dstyle = torch.einsum("boi,bo->bi", wg, d)
    dweight = torch.einsum("bkoi,boi->koi", corr, d[:, :, None] * s[:, None, :])
    t = (wg * s[:, None, :]).sum(-1) * d.pow(3)
    dstyle = dstyle - s * (t @ w9.square().sum(0))
    dweight = dweight - w9 * (t.t() @ s.square())[None]
    return dweight.reshape(3, 3, *dweight.shape[1:]).permute(2, 3, 0, 1), dstyle


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
