"""The GiftNet model: parameter counts, shapes, gradient flow, GIFT's invariants, Table 3."""

import pytest
import torch

from giftnet.ablations import TABLE3, ablation
from giftnet.config import ModelConfig
from giftnet.gift import resize_mask
from giftnet.losses import total_loss
from giftnet.model import GiftNet, build_teacher, count_parameters, parameter_breakdown


def batch(b=2, size=32, empty=False):
    image = torch.randn(b, 3, size, size)
    mask = torch.zeros(b, 1, size, size)
    if not empty:
        mask[:, :, size // 4 : size // 2, size // 8 : size // 2 + 3] = 1.0
    return image, mask


def test_backbone_has_exactly_the_issam_parameter_count():
    counts = parameter_breakdown(GiftNet(ModelConfig(gift_sites=())))
    assert counts["encoder"] == 1_174_080
    assert counts["decoder"] == 1_011_260
    assert counts["backbone"] == 2_185_340
    assert counts["gift"] == 0
    assert count_parameters(build_teacher()) == 2_185_340


def test_default_model_shapes_and_feature_maps():
    model = GiftNet()
    assert model.config.gift_sites == ("E1", "E2", "E3", "E4", "D2", "D3")
    image, mask = batch(2, 64)
    out = model(image, mask)
    expected = {
        "E1": (32, 64),
        "E2": (64, 32),
        "E3": (128, 16),
        "E4": (256, 8),
        "D1": (128, 16),
        "D2": (64, 32),
        "D3": (32, 64),
    }
    assert out["images"].shape == image.shape
    for site, (c, s) in expected.items():
        assert out[site].shape == (2, c, s, s), site


@pytest.mark.parametrize("row", sorted(TABLE3))
def test_table3_rows_build_and_every_parameter_gets_a_gradient(row):
    ab = ablation(row)
    model, teacher = GiftNet(ab.model), build_teacher(ab.model).eval()
    image, mask = batch(2, 32)
    with torch.no_grad():
        t_feats = teacher(image, mask) if ab.loss.uses_teacher else None
    parts = total_loss(model(image, mask), image, mask, ab.loss, t_feats)
    parts["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"row {row}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"row {row}: non-finite gradient for {name}"
    assert all(p.grad is None for p in teacher.parameters())
    expected_sites = set(ab.model.gift_sites)
    assert set(model.gift.sites) == expected_sites if expected_sites else model.gift is None
    if ab.loss.uses_teacher:
        assert {f"dis_{s}" for s in ab.loss.distill_sites} <= set(parts)


def test_guidance_modes_differ_where_they_should():
    none = GiftNet(ModelConfig(gift_sites=("D3",), guidance="none"))
    glob = GiftNet(ModelConfig(gift_sites=("D3",), guidance="global"))
    assert none.gift.sites["D3"].head is None and none.gift.sites["D3"].constant_style is not None
    assert glob.gift.sites["D3"].head is not None and hasattr(glob.gift, "trunk")
    selfg = GiftNet(ModelConfig(gift_sites=("D3", "E2"), guidance="self"))
    assert set(selfg.gift.self_trunks) == {"D3", "E2"}


def _sites_io(model, image, mask):
    """Each GIFT site's input and output map from one forward pass."""
    seen = {}
    original = model.gift.transform

    def spy(name, feat, m, hidden):
        out = original(name, feat, m, hidden)
        seen[name] = (feat, out)
        return out

    model.gift.transform = spy
    model(image, mask)
    return seen


@pytest.mark.parametrize("guidance", ["global", "none", "self"])
def test_gift_leaves_background_bit_identical(guidance):
    model = GiftNet(ModelConfig(guidance=guidance, gift_sites=("E1", "E2", "E3", "E4", "D1", "D2", "D3")))
    with torch.no_grad():
        for p in model.gift.parameters():  # far from identity, so the foreground really changes
            p.add_(torch.randn_like(p))
    image, mask = batch(2, 64)
    with torch.no_grad():
        seen = _sites_io(model, image, mask)
    assert set(seen) == set(model.config.gift_sites)
    for name, (feat, out) in seen.items():
        m = resize_mask(mask, feat.shape[-2:]).expand_as(feat)
        assert torch.equal(out[m == 0], feat[m == 0]), name
        assert not torch.allclose(out[m == 1], feat[m == 1]), name


def test_gift_starts_close_to_identity():
    model = GiftNet()
    image, mask = batch(2, 64)
    with torch.no_grad():
        seen = _sites_io(model, image, mask)
    for name, (feat, out) in seen.items():
        rel = (out - feat).norm() / feat.norm().clamp_min(1e-12)
        assert rel < 0.1, f"{name}: relative change {rel:.3f} at init"


def test_encoder_sites_feed_decoder_but_not_the_next_encoder_block():
    """f_e comes from the untransformed encoder; transformed E maps flow to the decoder."""
    model = GiftNet(ModelConfig(gift_sites=("E1",))).eval()
    image, mask = batch(1, 32)
    with torch.no_grad():
        model.gift.sites["E1"].weight.mul_(-1.0)  # a transform far from identity
        out = model(image, mask)
        plain = model.encoder(torch.cat([image, mask], 1))
    assert torch.equal(out["E2"], plain[1])  # E2 read the untransformed E1
    assert not torch.allclose(out["E1"], plain[0])


def test_empty_mask_is_finite_everywhere():
    model, teacher = GiftNet(), build_teacher()
    image, mask = batch(2, 32, empty=True)
    from giftnet.config import LossConfig

    out = model(image, mask)
    parts = total_loss(out, image, mask, LossConfig(), teacher(image, mask))
    parts["total"].backward()
    assert all(torch.isfinite(v).all() for v in parts.values())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_inputs_give_clear_errors():
    model = GiftNet()
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.randn(1, 3, 30, 32), torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="mask must be"):
        model(torch.randn(1, 3, 32, 32), torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="gift_sites"):
        ModelConfig(gift_sites=("E5",))
    with pytest.raises(ValueError, match="guidance"):
        ModelConfig(guidance="local")
