"""`impl=` dispatch rules and configuration round trips."""

import pytest
import torch

from giftnet.config import LossConfig, ModelConfig
from giftnet.kernels._dispatch import resolve_impl


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


def test_launch_helper_fixed_config_choice_pruning_and_aot_registry(monkeypatch):
    """One launch helper: a forced config wins, else the interpreter's, else a pinned one in
    deterministic mode (the first that fits C), else the autotuner; ops register their AOT specs."""
    import triton

    from giftnet.kernels import _dispatch

    narrow = triton.Config({"BLOCK_O": 32}, num_warps=4, num_stages=1)
    wide = triton.Config({"BLOCK_O": 64}, num_warps=8, num_stages=3, maxnreg=128)
    interp = triton.Config({"BLOCK_O": 16}, num_warps=4, num_stages=1)
    calls = []

    class Fake:  # stands for a JIT function (kernel[grid](...)) and an autotuner (tuned[grid](...))
        def __init__(self, name):
            self.name, self.configs, self.best_config = name, [wide, narrow], narrow
            self.arg_names = ["x", "BLOCK_O"]

        def __getitem__(self, grid):
            return lambda *args, **kw: calls.append((self.name, grid, args, kw))

    kernel, tuned = Fake("kernel"), Fake("tuned")

    def go(c):
        calls.clear()
        used = _dispatch.launch(
            kernel,
            tuned,
            lambda meta: (meta["BLOCK_O"],),
            7,
            interpreter_config=interp,
            channels=c,
            tile_keys=("BLOCK_O",),
        )
        return calls[0] + (used,)

    monkeypatch.setattr(_dispatch, "interpreter_enabled", lambda: False)
    assert go(32)[0] == "tuned" and go(32)[4] is narrow  # launch returns the config that ran
    with _dispatch.forced_launch(triton.Config({"BLOCK_O": 32, "BLOCK_H": 4}), chunk=5):
        assert "BLOCK_H" not in go(32)[3]  # a kernel gets only the meta-parameters it declares
    with _dispatch.forced_launch(wide, chunk=5):
        name, grid, args, kw, used = go(32)
        assert (name, grid, args) == ("kernel", (64,), (7,)) and kw["maxnreg"] == 128 and kw["num_warps"] == 8
        assert used is wide
        assert _dispatch.forced_param("chunk") == 5
    assert _dispatch.forced_param("chunk") is None
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert go(32)[1] == (32,)  # the wide tile would only compute padding at C = 32
    assert go(256)[1] == (64,)  # the first config, whatever the autotuner would pick
    monkeypatch.setattr(_dispatch, "interpreter_enabled", lambda: True)
    name, grid, _, kw, _ = go(256)
    assert grid == (16,) and "maxnreg" not in kw
    prune = _dispatch.channel_pruner(("BLOCK_O",))
    assert prune([wide, narrow], {"C": 17}) == [narrow] and prune([wide, narrow], {"C": 3}) == [wide]
    assert set(_dispatch.aot_providers()) == {"masked_modconv2d", "relation"}


def test_modconv_autotune_keys_bucket_the_image_size_and_configs_fit_the_channels():
    """The keys hold C, the layout and log4 of H*W (a new image size seldom re-tunes, the four
    GiftNet map sizes tune apart); pruning leaves no tile wider than C needs."""
    pytest.importorskip("triton")
    from giftnet.kernels._dispatch import channel_pruner
    from giftnet.kernels.masked_modconv import launch, launch_grads

    for key in (launch.FWD_KEY, launch_grads.GRAD_KEY):
        assert "size_bucket" in key and not {"H", "W"} & set(key)
    assert [launch.size_bucket(s, s) for s in (256, 128, 64, 32)] == [8, 7, 6, 5]
    assert launch.size_bucket(1000, 700) == launch.size_bucket(1024, 680) == 9
    kept = channel_pruner(launch.FWD_TILES)(launch.FWD_CONFIGS, {"C": 32})
    assert [c.kwargs["BLOCK_O"] for c in kept] == [32]
    assert len(channel_pruner(launch_grads.GRAD_TILES)(launch_grads.GRAD_CONFIGS, {"C": 256})) == 2
    assert len(channel_pruner(launch_grads.GRAD_TILES)(launch_grads.GRAD_CONFIGS, {"C": 32})) == 1
    assert "size_bucket" not in launch_grads.FIN_KEY  # the finalize's work does not depend on H, W
