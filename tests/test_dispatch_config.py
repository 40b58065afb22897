"""`impl=` dispatch rules and configuration round trips."""

import pytest
import torch

from giftnet.config import LossConfig, ModelConfig
from kernels._dispatch import resolve_impl


def test_auto_takes_the_reference_on_cpu_and_triton_insists(monkeypatch):
    x = torch.zeros(1)
    assert resolve_impl("op", "auto", x) == "reference"
    assert resolve_impl("op", "reference", x) == "reference"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_impl("op", "triton", x) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        resolve_impl("op", "triton", x)
    with pytest.raises(ValueError, match="impl must be one of"):
        resolve_impl("op", "fast", x)


def test_configs_round_trip_and_refuse_unknown_fields():
    cfg = ModelConfig(gift_sites=("D3",), guidance="self", base_channels=16)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    loss = LossConfig(distill="feature", distill_sites=("E1", "D2"))
    assert LossConfig.from_dict(loss.to_dict()) == loss
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({"gift_site": ["D3"]})
    with pytest.raises(ValueError, match="distill"):
        LossConfig(distill="kl")
    assert not LossConfig(distill="none").uses_teacher
