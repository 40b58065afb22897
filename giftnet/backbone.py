"""The iSSAM UNet (improved_ssam256: depth 4, 32 base channels) that GiftNet builds on.

Encoder blocks E1-E4 (two conv blocks each; BatchNorm from E3 on; 2x2 max-pool after E1-E3),
decoder blocks D1-D3 (bilinear x2 upsample -> conv block -> concat skip -> [attention] -> two
conv blocks with BatchNorm), spatial-separated attention in D3, and the output blending
a * input + (1 - a) * to_rgb(feat). With 32 base channels it has exactly 2,185,340 parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from giftnet.blocks import ConvBlock, DoubleConv, SpatialSeparatedAttention

# A hook that may replace a decoder block's output: (site name, feature map) -> feature map.
SiteTransform = Callable[[str, torch.Tensor], torch.Tensor]


def encoder_channels(base: int) -> tuple[int, ...]:
    return (base, 2 * base, 4 * base, 8 * base)


class Encoder(nn.Module):
    def __init__(self, base: int = 32, in_channels: int = 4) -> None:
        super().__init__()
        chans = encoder_channels(base)
        cins = (in_channels, *chans[:-1])
        # iSSAM batchnorm_from=2: the first two blocks have no normalisation.
        self.blocks = nn.ModuleList(
            DoubleConv(ci, co, norm=i >= 2) for i, (ci, co) in enumerate(zip(cins, chans, strict=True))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the block outputs E1..E4 (pre-pool), finest first."""
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            outputs.append(x)
            if i < len(self.blocks) - 1:
                x = F.max_pool2d(x, 2)
        return outputs


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, *, attention: bool) -> None:
        super().__init__()
        self.upconv = ConvBlock(cin, cout, norm=False)
        self.attention = SpatialSeparatedAttention(cskip + cout) if attention else None
        self.convs = DoubleConv(cskip + cout, cout, norm=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.upconv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        x = torch.cat([skip, x], dim=1)
        if self.attention is not None:
            x = self.attention(x, mask)
        return self.convs(x)


class Decoder(nn.Module):
    def __init__(self, base: int = 32) -> None:
        super().__init__()
        e = encoder_channels(base)
        # D1: E4 -> E3 width, D2: -> E2 width, D3: -> E1 width; attention only in D3 (attend_from=2).
        self.blocks = nn.ModuleList(UpBlock(e[3 - i], e[2 - i], e[2 - i], attention=i == 2) for i in range(3))
        self.conv_attention = nn.Conv2d(base, 1, kernel_size=1)
        self.to_rgb = nn.Conv2d(base, 3, kernel_size=1)

    def forward(
        self,
        enc: list[torch.Tensor],
        image: torch.Tensor,
        mask: torch.Tensor,
        transform: SiteTransform | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decode from E4 with skips E3..E1; return (blended image, [D1, D2, D3])."""
        x = enc[3]
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x, enc[2 - i], mask)
            if transform is not None:
                x = transform(f"D{i + 1}", x)
            outputs.append(x)
        alpha = torch.sigmoid(3.0 * self.conv_attention(x))
        return alpha * image + (1 - alpha) * self.to_rgb(x), outputs


def feature_dict(enc: list[torch.Tensor], dec: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"E{i + 1}": t for i, t in enumerate(enc)} | {f"D{i + 1}": t for i, t in enumerate(dec)}


def check_input(image: torch.Tensor, mask: torch.Tensor) -> None:
    """Clear errors for shapes the UNet cannot take (three 2x poolings need multiples of 8)."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    b, _, h, w = image.shape
    if tuple(mask.shape) != (b, 1, h, w):
        raise ValueError(f"mask must be ({b}, 1, {h}, {w}) to match the image, got {tuple(mask.shape)}")
    if h % 8 or w % 8:
        raise ValueError(f"image height and width must be multiples of 8, got {h}x{w}")
