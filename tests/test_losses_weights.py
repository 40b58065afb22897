"""Losses (components, options) and safetensors weights (round trip, refusals)."""

import pytest
import torch
from safetensors.torch import save_file

from giftnet.config import LossConfig, ModelConfig
from giftnet.losses import harmonization_loss, total_loss
from giftnet.model import GiftNet, build_teacher
from giftnet.weights import WeightsError, load_weights, save_weights


def test_fn_mse_normalises_by_foreground_area_with_a_floor():
    pred, real = torch.ones(2, 3, 20, 20), torch.zeros(2, 3, 20, 20)
    mask = torch.zeros(2, 1, 20, 20)
    mask[0, :, :15, :10] = 1  # area 150 > min_area 100
    cfg = LossConfig(harmonization="fn_mse")
    # sample 0: 1200 / (3 * 150); sample 1 (empty): 1200 / (3 * 100)
    expected = (1200 / 450 + 1200 / 300) / 2
    assert harmonization_loss(pred, real, mask, cfg).item() == pytest.approx(expected)
    assert harmonization_loss(pred, real, mask, LossConfig()).item() == pytest.approx(1.0)


@pytest.mark.parametrize("distill", ["relation", "feature"])
def test_total_loss_is_har_plus_weighted_distillation(distill):
    cfg = LossConfig(distill=distill, distill_weight=0.5)
    model, teacher = GiftNet(), build_teacher()
    image, mask = torch.randn(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    parts = total_loss(model(image, mask), image, mask, cfg, teacher(image, mask))
    assert set(parts) == {"total", "har", "dis", "dis_E1", "dis_E2", "dis_E3", "dis_E4"}
    dis = sum(parts[f"dis_E{i}"] for i in range(1, 5))
    torch.testing.assert_close(parts["dis"], dis)
    torch.testing.assert_close(parts["total"], parts["har"] + 0.5 * dis)
    with pytest.raises(ValueError, match="teacher"):
        total_loss(model(image, mask), image, mask, cfg, None)


def test_weights_round_trip_carries_the_architecture(tmp_path):
    cfg = ModelConfig(gift_sites=("D3", "E2"), guidance="self")
    model = GiftNet(cfg).eval()
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    loaded = load_weights(path).eval()
    assert loaded.config == cfg
    image, mask = torch.randn(1, 3, 32, 32), torch.ones(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, mask)["images"], model(image, mask)["images"], rtol=0, atol=0)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write cleaned up


def test_weights_refuse_bad_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match=r"junk\.safetensors"):
        load_weights(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(WeightsError, match="not a GiftNet weights file"):
        load_weights(plain)
    other = tmp_path / "other.safetensors"
    save_weights(GiftNet(ModelConfig(gift_sites=())), other)
    tensors = {k: v.clone() for k, v in GiftNet(ModelConfig(gift_sites=())).state_dict().items()}
    tensors["decoder.to_rgb.weight"] = torch.zeros(5, 32, 1, 1)
    from safetensors import safe_open

    with safe_open(str(other), "pt") as f:
        meta = f.metadata()
    bad = tmp_path / "bad_shape.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, bad, metadata=meta)
    with pytest.raises(WeightsError, match=r"to_rgb\.weight has shape"):
        load_weights(bad)


def test_demo_runs_end_to_end(capsys):
    from giftnet.demo import main

    assert main(["--size", "32", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "2,185,340" in out and "harmonised" in out
