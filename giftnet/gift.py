"""GIFT: globally guided feature transformation (paper section 3.1).

The pooled bottleneck f_e = GAP(F_e4) passes through a 4-layer MLP (three layers shared by all
sites, the fourth per site) that predicts a scale s per input channel; each site's base 3x3
kernel is modulated by s, demodulated per output channel, and applied to the foreground only:
F' = M * conv(M * F, W'') + (1 - M) * F (giftnet.kernels.masked_modconv2d).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from giftnet.config import ModelConfig
from giftnet.kernels import masked_modconv2d


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The mask at a feature map's size: the foreground fraction of each cell (area average).

    Cells entirely in the background stay exactly 0, so GIFT leaves them bit-identical.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=size, mode="area")


def mlp_trunk(cin: int, hidden: int) -> nn.Sequential:
    """The first three FC layers of the guidance MLP."""
    return nn.Sequential(
        nn.Linear(cin, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
    )


class GiftSite(nn.Module):
    """One transformed map: base kernel W (C x C x 3 x 3) and the source of its scale vector."""

    def __init__(self, channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.eps = cfg.demod_eps
        self.impl = cfg.modconv_impl
        # Near identity at init: a Dirac kernel plus noise whose energy per output channel is
        # gift_init_noise^2, whatever the width, so training starts from the plain backbone.
        dirac = torch.zeros(channels, channels, 3, 3)
        nn.init.dirac_(dirac)
        noise = torch.randn_like(dirac) * (cfg.gift_init_noise / math.sqrt(9 * channels))
        self.weight = nn.Parameter(dirac + noise)
        if cfg.guidance == "none":
            self.constant_style: nn.Parameter | None = nn.Parameter(torch.ones(channels))
            self.head: nn.Linear | None = None
        else:
            self.constant_style = None
            self.head = nn.Linear(cfg.mlp_hidden, channels)
            nn.init.normal_(self.head.weight, std=0.1 / math.sqrt(cfg.mlp_hidden))
            nn.init.ones_(self.head.bias)

    def style(self, hidden: torch.Tensor | None, batch: int) -> torch.Tensor:
        if self.head is None:  # guidance "none": one learned style for every image
            assert self.constant_style is not None
            return self.constant_style.expand(batch, -1)
        return self.head(hidden)

    def forward(self, feat: torch.Tensor, mask: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return masked_modconv2d(feat, self.weight, style, mask, eps=self.eps, impl=self.impl)


class Gift(nn.Module):
    """All GIFT sites of a network and the guidance MLP that drives them."""

    def __init__(self, site_channels: dict[str, int], bottleneck_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.guidance = cfg.guidance
        self.sites = nn.ModuleDict({name: GiftSite(c, cfg) for name, c in site_channels.items()})
        if cfg.guidance == "global":
            self.trunk = mlp_trunk(bottleneck_channels, cfg.mlp_hidden)
        elif cfg.guidance == "self":
            # Each site pools its own map, whose width differs per site: one trunk per site.
            self.self_trunks = nn.ModuleDict({n: mlp_trunk(c, cfg.mlp_hidden) for n, c in site_channels.items()})

    def guidance_hidden(self, bottleneck: torch.Tensor) -> torch.Tensor | None:
        """Shared hidden features from f_e = GAP(F_e4) (global guidance only)."""
        if self.guidance != "global":
            return None
        return self.trunk(bottleneck.mean(dim=(2, 3)))

    def transform(self, name: str, feat: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        """Transform the foreground of `feat` at site `name`; `mask` is at the image size."""
        site = cast(GiftSite, self.sites[name])
        if self.guidance == "self":
            hidden = self.self_trunks[name](feat.mean(dim=(2, 3)))
        style = site.style(hidden, feat.shape[0])
        return site(feat, resize_mask(mask, feat.shape[-2:]).to(feat.dtype), style)
