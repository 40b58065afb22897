"""The PyTorch references of the kernels, against independent formulations and invariants."""

import pytest
import torch
import torch.nn.functional as F

from giftnet.kernels import masked_modconv2d, relation_distill_loss, relation_map


def grouped_modconv(x, weight, style, mask, demodulate=True, eps=1e-8):
    """StyleGAN2's original form: per-sample weights W''_b, one grouped convolution."""
    b, c, h, w = x.shape
    wb = weight[None] * style[:, None, :, None, None]  # (B, O, I, 3, 3)
    if demodulate:
        wb = wb * torch.rsqrt(wb.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
    y = F.conv2d((mask * x).reshape(1, b * c, h, w), wb.reshape(b * c, c, 3, 3), padding=1, groups=b)
    return mask * y.reshape(b, c, h, w) + (1 - mask) * x


def make_mask(kind, b, h, w):
    if kind == "empty":
        return torch.zeros(b, 1, h, w)
    if kind == "full":
        return torch.ones(b, 1, h, w)
    if kind == "soft":
        return torch.rand(b, 1, h, w)
    m = torch.zeros(b, 1, h, w)
    m[:, :, h // 3 : h - 1, 1 : w // 2 + 1] = 1.0
    return m


SHAPES = [(1, 3, 7, 13), (3, 17, 17, 9), (2, 48, 8, 8), (1, 64, 5, 6)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask_kind", ["empty", "full", "soft", "box"])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modconv_reference_equals_grouped_conv(shape, mask_kind, demodulate):
    b, c, h, w = shape
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c, c, 3, 3, dtype=torch.float64, requires_grad=True)
    style = (torch.rand(b, c, dtype=torch.float64) + 0.5).requires_grad_()
    mask = make_mask(mask_kind, b, h, w).double()
    grad = torch.randn(shape, dtype=torch.float64)

    ours = masked_modconv2d(x, weight, style, mask, demodulate=demodulate, impl="reference")
    ours_grads = torch.autograd.grad(ours, (x, weight, style), grad)
    theirs = grouped_modconv(x, weight, style, mask, demodulate)
    theirs_grads = torch.autograd.grad(theirs, (x, weight, style), grad)
    torch.testing.assert_close(ours, theirs)
    for name, a, e in zip(("x", "weight", "style"), ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, e, msg=lambda m, n=name: f"grad {n}: {m}")
    if mask_kind == "empty":
        assert torch.equal(ours, x)


def test_modconv_rejects_bad_arguments_by_name():
    x = torch.randn(2, 4, 8, 8)
    ok = {"weight": torch.randn(4, 4, 3, 3), "style": torch.ones(2, 4), "mask": torch.ones(2, 1, 8, 8)}
    bad = {"weight": torch.randn(4, 4, 1, 1), "style": torch.ones(4), "mask": torch.ones(2, 3, 8, 8)}
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name):
            masked_modconv2d(x, **(ok | {name: value}))
    with pytest.raises(ValueError, match="impl"):
        masked_modconv2d(x, **ok, impl="cuda")


@pytest.mark.parametrize("mask_kind", ["empty", "full", "soft", "box", "one_pixel"])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (3, 32, 7, 13), (2, 256, 4, 4)])
def test_relation_map_rows_are_distributions(shape, mask_kind):
    b, _, h, w = shape
    feat = torch.randn(shape) * 3
    if mask_kind == "one_pixel":
        mask = torch.zeros(b, 1, h, w)
        mask[:, :, h // 2, w // 2] = 1
    else:
        mask = make_mask(mask_kind, b, h, w)
    r = relation_map(feat, mask)
    assert r.shape == (b, h * w) and r.dtype == torch.float32
    assert torch.isfinite(r).all() and (r >= 0).all()
    torch.testing.assert_close(r.sum(dim=1), torch.ones(b))


def test_relation_map_is_the_gaussian_similarity_of_the_paper():
    feat = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [1.0, 1.0]]).t().reshape(1, 2, 2, 2)
    mask = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)  # f = pixel 0 = (0, 0)
    gamma = 0.1
    logits = -gamma * torch.tensor([0.0, 9.0, 16.0, 2.0])
    torch.testing.assert_close(relation_map(feat, mask, gamma=gamma)[0], torch.softmax(logits, 0))


def test_relation_loss_zero_for_identical_maps_and_no_teacher_gradient():
    student = torch.randn(2, 8, 6, 5, requires_grad=True)
    teacher = student.detach().clone().requires_grad_()
    mask = make_mask("box", 2, 6, 5)
    loss = relation_distill_loss(student, teacher, mask)
    assert loss.item() == 0.0
    other = torch.randn(2, 8, 6, 5, requires_grad=True)
    loss = relation_distill_loss(student, other, mask)
    loss.backward()
    assert loss.item() > 0 and student.grad is not None and other.grad is None


def test_relation_loss_is_batch_mean_of_squared_map_differences():
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    mask = make_mask("soft", 3, 5, 5)
    expected = (relation_map(s, mask) - relation_map(t, mask)).square().sum(1).mean()
    torch.testing.assert_close(relation_distill_loss(s, t, mask), expected)


def test_relation_with_huge_distances_and_empty_mask_stays_finite():
    feat = torch.randn(2, 16, 9, 9) * 1e3  # gamma * distance far beyond exp's range
    for mask in (make_mask("empty", 2, 9, 9), make_mask("box", 2, 9, 9)):
        feat_g = feat.clone().requires_grad_()
        loss = relation_distill_loss(feat_g, torch.randn(2, 16, 9, 9), mask)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(feat_g.grad).all()
        assert torch.isfinite(relation_map(feat, mask)).all()
