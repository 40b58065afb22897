"""Building blocks of the iSSAM backbone (conv blocks, channel gates, spatial-separated attention)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Sequential):
    """3x3 conv -> BatchNorm (or identity) -> ReLU."""

    def __init__(self, cin: int, cout: int, *, norm: bool, bias: bool = True) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(cout) if norm else nn.Identity(),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, *, norm: bool) -> None:
        super().__init__(ConvBlock(cin, cout, norm=norm), ConvBlock(cout, cout, norm=norm))


class ChannelGate(nn.Module):
    """Channel attention from global average and max pooling: x * sigmoid(MLP([avg, max]))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(channels // 16, 8)
        self.mlp = nn.Sequential(
            nn.Linear(2 * channels, mid), nn.ReLU(inplace=True), nn.Linear(mid, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return x * self.mlp(pooled)[:, :, None, None]


def gaussian_kernel(size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian, (1, 1, size, size)."""
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    k = g[:, None] * g[None, :]
    return (k / k.sum())[None, None]


class SpatialSeparatedAttention(nn.Module):
    """iSSAM's attention: separate gates for background, foreground and their mix.

    out = m * (learn(fg_gate(x)) + mix_gate(x)) + (1 - m) * bg_gate(x), with m the mask
    resized to x and blurred by a 7x7 Gaussian (sigma 1, zero padding, as iSSAM does).
    """

    def __init__(self, channels: int, mid_k: float = 0.5) -> None:
        super().__init__()
        self.background_gate = ChannelGate(channels)
        self.foreground_gate = ChannelGate(channels)
        self.mix_gate = ChannelGate(channels)
        mid = int(mid_k * channels)
        self.learning_block = nn.Sequential(
            ConvBlock(channels, mid, norm=True, bias=False), ConvBlock(mid, channels, norm=True, bias=False)
        )
        self.blur: torch.Tensor
        self.register_buffer("blur", gaussian_kernel(7, 1.0), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=True)
        m = F.conv2d(m, self.blur.to(m.dtype), padding=3).to(x.dtype)
        foreground = self.learning_block(self.foreground_gate(x))
        return m * (foreground + self.mix_gate(x)) + (1 - m) * self.background_gate(x)
