"""GiftNet: the iSSAM backbone with GIFT sites, and the reconstruction branch (teacher)."""

from __future__ import annotations

import torch
from torch import nn

from giftnet.backbone import Decoder, Encoder, check_input, encoder_channels, feature_dict
from giftnet.config import ModelConfig
from giftnet.gift import Gift


def site_channels(base: int) -> dict[str, int]:
    e = encoder_channels(base)
    return {"E1": e[0], "E2": e[1], "E3": e[2], "E4": e[3], "D1": e[2], "D2": e[1], "D3": e[0]}


class GiftNet(nn.Module):
    """Harmonization network. forward(image, mask) -> {"images", "E1".."E4", "D1".."D3"}.

    image: normalised RGB (ImageNet mean/std), (B, 3, H, W) with H, W multiples of 8;
    mask: (B, 1, H, W) in [0, 1]. "images" is the harmonised image in the same normalised space;
    the feature entries are the maps as they flow on (after GIFT where a site has it), the ones
    relation distillation compares. With no GIFT sites this is exactly iSSAM.

    Order of computation (docs/decisions.md, "Model"): the encoder runs once untransformed and
    f_e = GAP(E4) of that pass; each transformed encoder map replaces the original wherever it
    is consumed downstream (skip, decoder input, distillation); decoder sites transform a
    block's output before it flows on.
    """

    def __init__(self, cfg: ModelConfig | None = None, role: str = "model") -> None:
        super().__init__()
        self.config = cfg or ModelConfig()
        self.role = role  # "model", or "teacher" for the reconstruction branch (recorded in its weights)
        base = self.config.base_channels
        self.encoder = Encoder(base)
        self.decoder = Decoder(base)
        chans = site_channels(base)
        sites: dict[str, int] = {s: chans[s] for s in self.config.gift_sites}
        self.gift = Gift(sites, chans["E4"], self.config) if sites else None

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(image, mask)
        mask = mask.to(image.dtype)
        enc = self.encoder(torch.cat([image, mask], dim=1))
        transform = None
        if self.gift is not None:
            gift = self.gift
            hidden = gift.guidance_hidden(enc[3])

            def transform(name: str, feat: torch.Tensor) -> torch.Tensor:
                return gift.transform(name, feat, mask, hidden) if name in gift.sites else feat

            enc = [transform(f"E{i + 1}", t) for i, t in enumerate(enc)]
        out, dec = self.decoder(enc, image, mask, transform)
        return {"images": out, **feature_dict(enc, dec)}


def build_model(cfg: ModelConfig | None = None) -> GiftNet:
    return GiftNet(cfg)


def build_teacher(cfg: ModelConfig | None = None) -> GiftNet:
    """The reconstruction branch: the same UNet without GIFT (input: the real image + mask)."""
    base = (cfg or ModelConfig()).base_channels
    return GiftNet(ModelConfig(base_channels=base, gift_sites=()), role="teacher")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_breakdown(model: GiftNet) -> dict[str, int]:
    """Trainable parameters of the backbone parts and of GIFT."""
    parts = {"encoder": model.encoder, "decoder": model.decoder}
    counts = {name: count_parameters(m) for name, m in parts.items()}
    counts["backbone"] = counts["encoder"] + counts["decoder"]
    counts["gift"] = count_parameters(model.gift) if model.gift is not None else 0
    counts["total"] = counts["backbone"] + counts["gift"]
    return counts
