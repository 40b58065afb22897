"""The relation kernels compiled for a real GPU: autotuned launches, every tile config, bf16,
and the E1-E4 sizes of a 256x256 batch of 16, against the PyTorch references.

Skipped without CUDA. The awkward shapes of tests/test_relation_triton.py (7x13 maps, 3 and 17
channels, ...) are covered by the interpreter and not repeated here.
"""

from __future__ import annotations

import pytest
import torch

from giftnet import kernels
from giftnet.kernels._dispatch import forced_launch
from giftnet.kernels.relation import relation_distill_loss_reference, relation_map_reference
from giftnet.kernels.relation.autograd import relation_distill_loss_triton, relation_map_triton
from giftnet.kernels.relation.launch import CONFIGS
from giftnet.kernels.testing import TOLERANCES, make_features, make_mask, tolerance

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GAMMA = 0.01
# (dtype, atol relative to the reference's largest magnitude, rtol): inputs are the same for
# both sides and both compute in fp32; the tolerance covers the gradient's rounding to dtype.
TOLS = [pytest.param(d, *tolerance("relation", "gpu", d), id=str(d)[6:]) for d in TOLERANCES["relation", "gpu"]]
LOW = [p for p in TOLS if p.id != "float32"]


def _mask(kind: str, b: int, h: int, w: int) -> torch.Tensor:
    return make_mask(kind, b, h, w).cuda()


def _feat(b: int, c: int, h: int, w: int, layout: str, dtype: torch.dtype) -> torch.Tensor:
    return make_features(b, c, h, w, layout, dtype, device="cuda")


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    scale = expected.detach().float().abs().max().item()
    floor = 2.0**-23 if expected.dtype == torch.float16 else 0.0
    torch.testing.assert_close(actual.detach().float(), expected.detach().float(), atol=atol * scale + floor, rtol=rtol)


def _check(feat: torch.Tensor, mask: torch.Tensor, atol: float, rtol: float) -> None:
    """Map (rows sum to 1, shared upstream gradient) and loss (upstream 3.7) with gradients."""
    out = relation_map_triton(feat, mask, gamma=GAMMA)
    ref = relation_map_reference(feat, mask, gamma=GAMMA)
    _close(out, ref, atol, rtol)
    torch.testing.assert_close(out.detach().sum(dim=1), torch.ones(out.shape[0], device="cuda"))
    upstream = torch.randn_like(ref)
    _close(torch.autograd.grad(out, feat, upstream)[0], torch.autograd.grad(ref, feat, upstream)[0], atol, rtol)

    teacher = torch.randn(feat.shape, device="cuda").to(feat.dtype)
    loss = relation_distill_loss_triton(feat, teacher, mask, gamma=GAMMA)
    ref = relation_distill_loss_reference(feat, teacher, mask, gamma=GAMMA)
    _close(loss, ref, atol, rtol)
    grad = torch.autograd.grad(loss * 3.7, feat)[0]
    assert grad.dtype == feat.dtype
    _close(grad, torch.autograd.grad(ref * 3.7, feat)[0], atol, rtol)


SHAPES = [
    pytest.param(1, 3, 1, 1, "full", "nchw", id="b1-c3-1x1"),
    pytest.param(3, 48, 13, 7, "mixed", "cl", id="b3-c48-13x7-mixed-cl"),
    pytest.param(1, 32, 64, 64, "soft", "nchw", id="b1-c32-64x64-soft"),
    pytest.param(3, 256, 64, 64, "mixed", "cl", id="b3-c256-64x64-mixed-cl"),
]


@pytest.mark.parametrize(("b", "c", "h", "w", "mask_kind", "layout"), SHAPES)
@pytest.mark.parametrize(("dtype", "atol", "rtol"), TOLS)
def test_autotuned_matches_reference(b, c, h, w, mask_kind, layout, dtype, atol, rtol):
    _check(_feat(b, c, h, w, layout, dtype), _mask(mask_kind, b, h, w), atol, rtol)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "c{BLOCK_C}-n{BLOCK_N}".format(**c.kwargs))
@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize(("dtype", "atol", "rtol"), LOW)
def test_every_config(config, layout, dtype, atol, rtol):
    with forced_launch(config):
        _check(_feat(3, 96, 32, 32, layout, dtype), _mask("mixed", 3, 32, 32), atol, rtol)


@pytest.mark.parametrize(("c", "size"), [(32, 256), (64, 128), (128, 64), (256, 32)], ids=["E1", "E2", "E3", "E4"])
@pytest.mark.parametrize(("dtype", "atol", "rtol"), LOW)
def test_training_sizes(c, size, dtype, atol, rtol):
    """Batch 16 at the encoder levels of a 256x256 input, as in training."""
    _check(_feat(16, c, size, size, "nchw", dtype), _mask("blob", 16, size, size), atol, rtol)


def test_deterministic_and_dispatched():
    """Two runs at E1 are bitwise equal, and impl='auto' takes this kernel on CUDA."""
    student = _feat(16, 32, 256, 256, "nchw", torch.float16)
    teacher = torch.randn_like(student).detach()
    mask = _mask("soft", 16, 256, 256)
    runs = []
    for _ in range(2):
        loss = relation_distill_loss_triton(student, teacher, mask, gamma=GAMMA)
        runs.append((loss.detach(), torch.autograd.grad(loss, student)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    auto = kernels.relation_distill_loss(student, teacher, mask, gamma=GAMMA, impl="auto")
    assert torch.equal(auto.detach(), runs[0][0])


def test_large_magnitudes_stay_finite():
    mask = _mask("blob", 3, 64, 64)
    feat = (torch.randn(3, 32, 64, 64, device="cuda") * 100).requires_grad_(True)
    out = relation_map_triton(feat, mask, gamma=GAMMA)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.detach().sum(dim=1), torch.ones(3, device="cuda"))
    loss = relation_distill_loss_triton(feat, torch.randn_like(feat) * 100, mask, gamma=GAMMA)
    (grad,) = torch.autograd.grad(loss, feat)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
