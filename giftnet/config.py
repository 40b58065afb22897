"""Typed configuration of the network and its losses; every row of the paper's Table 3 is one.

Each field is bounded: a weights file's metadata is a ModelConfig, built (and so checked) before
any tensor is allocated, so a file declaring `base_channels 2048` or `mlp_hidden 1e10` is refused
rather than allocating gigabytes. Fields carry their command-line help (see giftnet.fields).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from giftnet.choices import Distill, Guidance, HarmonizationLoss, Impl, Site
from giftnet.errors import ConfigError
from giftnet.fields import from_dict, option

ENCODER_SITES = ("E1", "E2", "E3", "E4")
DECODER_SITES = ("D1", "D2", "D3")
ALL_SITES = ENCODER_SITES + DECODER_SITES
GUIDANCE_MODES = ("global", "none", "self")
HARMONIZATION_LOSSES = ("l1", "fn_mse")
DISTILL_KINDS = ("relation", "feature", "none")

# Bounds far beyond any useful setting but small enough that a hostile file cannot make us
# allocate much: base_channels 128 is 4x iSSAM's width (about 35M parameters, 140 MB).
MAX_BASE_CHANNELS = 128
MAX_MLP_HIDDEN = 4096


def _check_sites(field: str, sites: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [s for s in sites if s not in allowed]
    if bad:
        raise ConfigError(f"{field}: unknown site(s) {bad}; choose from {list(allowed)}")
    if len(set(sites)) != len(sites):
        raise ConfigError(f"{field}: sites repeat in {list(sites)}")


def _check_range(field: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> None:
    """`value` must be finite and in [lo, hi] (or (lo, hi] with lo_open)."""
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{field}: must be finite and in {bracket}{lo:g}, {hi:g}], got {value}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The harmonization network: iSSAM backbone (depth 4) plus GIFT at `gift_sites`.

    `gift_sites=()` is the plain backbone (Table 3 row 1, and the reconstruction branch).
    `guidance`: "global" (scale vector from the pooled bottleneck, the paper's method),
    "none" (a learned constant scale per site, row 6) or "self" (from the pooled map being
    transformed, row 7). `modconv_impl` is how to run, not what is computed: it is left out of
    comparisons, so weights trained with the Triton kernel load into a reference-kernel model.
    """

    base_channels: int = option(32, help=f"backbone width, a multiple of 8 up to {MAX_BASE_CHANNELS} (iSSAM: 32)")
    gift_sites: tuple[Site, ...] = option(
        ("E1", "E2", "E3", "E4", "D2", "D3"), help="GIFT sites among E1-E4, D1-D3 (default: E1 E2 E3 E4 D2 D3)"
    )
    guidance: Guidance = option("global", help="source of GIFT's scale vectors (paper: global)")
    mlp_hidden: int = option(256, help=f"hidden width of the guidance MLP (1-{MAX_MLP_HIDDEN})")
    gift_init_noise: float = option(0.1, help="noise on GIFT's near-identity initial kernels (0-1)")
    demod_eps: float = option(1e-8, help="epsilon of the demodulation, in (0, 1]")
    modconv_impl: Impl = option("auto", help="masked modconv kernel (auto: Triton on CUDA)", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gift_sites", tuple(self.gift_sites))
        _check_sites("gift_sites", self.gift_sites, ALL_SITES)
        if self.guidance not in GUIDANCE_MODES:
            raise ConfigError(f"guidance: must be one of {GUIDANCE_MODES}, got {self.guidance!r}")
        if not 8 <= self.base_channels <= MAX_BASE_CHANNELS or self.base_channels % 8:
            raise ConfigError(
                f"base_channels: must be a multiple of 8 in [8, {MAX_BASE_CHANNELS}], got {self.base_channels}"
            )
        if not 1 <= self.mlp_hidden <= MAX_MLP_HIDDEN:
            raise ConfigError(f"mlp_hidden: must be in [1, {MAX_MLP_HIDDEN}], got {self.mlp_hidden}")
        _check_range("gift_init_noise", self.gift_init_noise, 0.0, 1.0)
        _check_range("demod_eps", self.demod_eps, 0.0, 1.0, lo_open=True)
        if self.modconv_impl not in ("auto", "reference", "triton"):
            raise ConfigError(f"modconv_impl: must be auto, reference or triton, got {self.modconv_impl!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> ModelConfig:
        return from_dict(cls, data, where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """L = L_har + distill_weight * sum over `distill_sites` of L_dis (paper eq. 4)."""

    harmonization: HarmonizationLoss = option(
        "l1", flag="--loss", help="harmonization loss: l1 (paper), fn_mse (iSSAM)"
    )
    fn_mse_min_area: float = option(100.0, help="fn_mse: floor of the foreground area, in pixels")
    distill: Distill = option("relation", help="distillation from the reconstruction branch (paper: relation)")
    distill_sites: tuple[Site, ...] = option(ENCODER_SITES, help="maps to distil (default: E1 E2 E3 E4)")
    distill_weight: float = option(1e-3, help="lambda, the weight of distillation (paper: 0.001)")
    gamma: float = option(0.01, help="relation-map gamma (paper: 0.01)")
    relation_impl: Impl = option("auto", help="relation-map kernel (auto: Triton on CUDA)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "distill_sites", tuple(self.distill_sites))
        _check_sites("distill_sites", self.distill_sites, ALL_SITES)
        if self.harmonization not in HARMONIZATION_LOSSES:
            raise ConfigError(f"harmonization: must be one of {HARMONIZATION_LOSSES}, got {self.harmonization!r}")
        if self.distill not in DISTILL_KINDS:
            raise ConfigError(f"distill: must be one of {DISTILL_KINDS}, got {self.distill!r}")
        for name in ("fn_mse_min_area", "distill_weight", "gamma"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name}: must be finite, got {getattr(self, name)}")
        if self.distill_weight < 0 or self.gamma <= 0 or self.fn_mse_min_area <= 0:
            raise ConfigError("distill_weight must be >= 0, gamma and fn_mse_min_area > 0")
        if self.relation_impl not in ("auto", "reference", "triton"):
            raise ConfigError(f"relation_impl: must be auto, reference or triton, got {self.relation_impl!r}")

    @property
    def uses_teacher(self) -> bool:
        return self.distill != "none" and bool(self.distill_sites) and self.distill_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> LossConfig:
        return from_dict(cls, data, where)
