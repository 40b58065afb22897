"""Typed configuration of the network and its losses; every row of the paper's Table 3 is one."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

ENCODER_SITES = ("E1", "E2", "E3", "E4")
DECODER_SITES = ("D1", "D2", "D3")
ALL_SITES = ENCODER_SITES + DECODER_SITES
GUIDANCE_MODES = ("global", "none", "self")
HARMONIZATION_LOSSES = ("l1", "fn_mse")
DISTILL_KINDS = ("relation", "feature", "none")


def _check_sites(field: str, sites: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [s for s in sites if s not in allowed]
    if bad:
        raise ValueError(f"{field}: unknown site(s) {bad}; choose from {list(allowed)}")
    if len(set(sites)) != len(sites):
        raise ValueError(f"{field}: sites repeat in {list(sites)}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The harmonization network: iSSAM backbone (depth 4) plus GIFT at `gift_sites`.

    `gift_sites=()` is the plain backbone (Table 3 row 1, and the reconstruction branch).
    `guidance`: "global" (scale vector from the pooled bottleneck, the paper's method),
    "none" (a learned constant scale per site, row 6) or "self" (from the pooled map being
    transformed, row 7).
    """

    base_channels: int = 32
    gift_sites: tuple[str, ...] = ("E1", "E2", "E3", "E4", "D2", "D3")
    guidance: str = "global"
    mlp_hidden: int = 256
    gift_init_noise: float = 0.1
    demod_eps: float = 1e-8
    modconv_impl: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "gift_sites", tuple(self.gift_sites))
        _check_sites("gift_sites", self.gift_sites, ALL_SITES)
        if self.guidance not in GUIDANCE_MODES:
            raise ValueError(f"guidance: must be one of {GUIDANCE_MODES}, got {self.guidance!r}")
        if self.base_channels < 8 or self.base_channels % 8:
            raise ValueError(f"base_channels: must be a positive multiple of 8, got {self.base_channels}")
        if self.mlp_hidden < 1:
            raise ValueError(f"mlp_hidden: must be positive, got {self.mlp_hidden}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """L = L_har + distill_weight * sum over `distill_sites` of L_dis (paper eq. 4)."""

    harmonization: str = "l1"
    fn_mse_min_area: float = 100.0
    distill: str = "relation"
    distill_sites: tuple[str, ...] = ENCODER_SITES
    distill_weight: float = 1e-3
    gamma: float = 0.01
    relation_impl: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "distill_sites", tuple(self.distill_sites))
        _check_sites("distill_sites", self.distill_sites, ALL_SITES)
        if self.harmonization not in HARMONIZATION_LOSSES:
            raise ValueError(f"harmonization: must be one of {HARMONIZATION_LOSSES}, got {self.harmonization!r}")
        if self.distill not in DISTILL_KINDS:
            raise ValueError(f"distill: must be one of {DISTILL_KINDS}, got {self.distill!r}")
        if self.distill_weight < 0 or self.gamma <= 0 or self.fn_mse_min_area <= 0:
            raise ValueError("distill_weight must be >= 0, gamma and fn_mse_min_area > 0")

    @property
    def uses_teacher(self) -> bool:
        return self.distill != "none" and bool(self.distill_sites) and self.distill_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossConfig:
        return _from_dict(cls, data)


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
