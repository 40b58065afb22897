"""Triton relation map and relation-distillation loss against the PyTorch references.

Runs the kernels through Triton's interpreter on the CPU (conftest sets TRITON_INTERPRET=1),
or on the GPU when there is one (then with the autotuned launches).
"""

from __future__ import annotations

import random

import pytest
import torch

from giftnet import kernels
from giftnet.kernels._dispatch import forced_launch
from giftnet.kernels.relation import relation_distill_loss_reference, relation_map_reference
from giftnet.kernels.relation.autograd import relation_distill_loss_triton, relation_map_triton
from giftnet.kernels.relation.launch import CONFIGS
from giftnet.kernels.testing import make_features, make_mask

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GAMMA = 0.01

# (dtype, atol, rtol); atol is relative to the largest magnitude of the reference value. Both
# sides compute in fp32 from the same inputs, so fp16 differs from fp32 only where a gradient
# is rounded back to fp16.
TOLS = [
    pytest.param(torch.float32, 1e-5, 1e-4, id="fp32"),
    pytest.param(torch.float16, 2e-3, 2e-3, id="fp16"),
]


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, terms: float = 0.0) -> None:
    """assert_close with atol relative to the larger of the reference's magnitude and `terms`,
    the size of the terms it sums (where they cancel, both sides hold rounding noise of that
    size), plus two fp16 subnormal steps for fp16 (tiny gradients round to subnormals)."""
    scale = max(expected.detach().float().abs().max().item(), terms)
    floor = 2.0**-23 if expected.dtype == torch.float16 else 0.0
    torch.testing.assert_close(actual.detach().float(), expected.detach().float(), atol=atol * scale + floor, rtol=rtol)


def gradient_terms(feat: torch.Tensor, mask: torch.Tensor, dl_dr: torch.Tensor) -> float:
    """Size of the terms of a feature gradient, 2 gamma max|dL/dz| max|F - f|, from the
    reference map: where they cancel (two pixels under a full mask keep R constant, so the
    gradient is exactly zero) both sides hold rounding noise of that size."""
    x = feat.detach().float()
    spread = (x - kernels.relation.foreground_mean(x, mask)[:, :, None, None]).abs().max()
    r = relation_map_reference(x, mask, gamma=GAMMA)
    dz = r * (dl_dr - (r * dl_dr).sum(dim=1, keepdim=True))
    return (2 * GAMMA * dz.abs().max() * spread).item()


def check_map(feat: torch.Tensor, mask: torch.Tensor, atol: float, rtol: float) -> None:
    """Forward, rows summing to 1, and the feature gradient under one shared upstream gradient."""
    out = relation_map_triton(feat, mask, gamma=GAMMA)
    ref = relation_map_reference(feat, mask, gamma=GAMMA)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    close(out, ref, atol, rtol)
    torch.testing.assert_close(out.detach().sum(dim=1), torch.ones(out.shape[0], device=out.device))
    upstream = torch.randn_like(ref)
    (grad,) = torch.autograd.grad(out, feat, upstream)
    (grad_ref,) = torch.autograd.grad(ref, feat, upstream)
    assert grad.dtype == feat.dtype and grad.shape == feat.shape
    close(grad, grad_ref, atol, rtol, gradient_terms(feat, mask, upstream))


def check_loss(student: torch.Tensor, mask: torch.Tensor, atol: float, rtol: float, scale: float = 1.0) -> None:
    """Loss and student gradient (upstream 3.7) against the reference; teacher at `scale`."""
    teacher = (torch.randn(student.shape) * scale).to(student.dtype).to(DEVICE)
    loss = relation_distill_loss_triton(student, teacher, mask, gamma=GAMMA)
    ref = relation_distill_loss_reference(student, teacher, mask, gamma=GAMMA)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    close(loss, ref, atol, rtol)
    (grad,) = torch.autograd.grad(loss * 3.7, student)
    (grad_ref,) = torch.autograd.grad(ref * 3.7, student)
    assert grad.dtype == student.dtype
    r_s, r_t = (relation_map_reference(x.detach(), mask, gamma=GAMMA) for x in (student, teacher))
    dl_dr = 2 * 3.7 * (r_s - r_t) / student.shape[0]
    close(grad, grad_ref, atol, rtol, gradient_terms(student, mask, dl_dr))


# batch, channels, height, width, mask, layout: the shapes without the full product.
CASES = [
    pytest.param(1, 3, 1, 1, "full", "nchw", id="b1-c3-1x1-full"),
    pytest.param(3, 32, 1, 1, "mixed", "nchw", id="b3-c32-1x1-mixed"),
    pytest.param(3, 32, 7, 13, "binary", "nchw", id="b3-c32-7x13-binary"),
    pytest.param(3, 3, 7, 13, "empty", "cl", id="b3-c3-7x13-empty-cl"),
    pytest.param(1, 17, 7, 13, "full", "strided", id="b1-c17-7x13-full-strided"),
    pytest.param(3, 256, 7, 13, "one_pixel", "nchw", id="b3-c256-7x13-one_pixel"),
    pytest.param(3, 48, 13, 7, "mixed", "cl", id="b3-c48-13x7-mixed-cl"),
    pytest.param(1, 32, 64, 64, "soft", "nchw", id="b1-c32-64x64-soft"),
]


@pytest.mark.parametrize(("b", "c", "h", "w", "mask_kind", "layout"), CASES)
@pytest.mark.parametrize(("dtype", "atol", "rtol"), TOLS)
def test_map_and_loss_match_reference(b, c, h, w, mask_kind, layout, dtype, atol, rtol):
    mask = make_mask(mask_kind, b, h, w).to(DEVICE)
    feat = make_features(b, c, h, w, layout, dtype, device=DEVICE)
    check_map(feat, mask, atol, rtol)
    check_loss(feat, mask, atol, rtol)


def _random_small_cases(n: int, seed: int = 9) -> list[tuple]:
    rng = random.Random(seed)
    kinds, layouts = ["empty", "full", "one_pixel", "binary", "soft", "mixed"], ["nchw", "cl", "strided"]
    cases = []
    for _ in range(n):
        shape = (rng.randint(1, 3), rng.randint(1, 20), rng.randint(1, 9), rng.randint(1, 9))
        cases.append((*shape, rng.choice(kinds), rng.choice(layouts), rng.choice([None, 64])))
    return cases


@pytest.mark.parametrize(("b", "c", "h", "w", "mask_kind", "layout", "chunk"), _random_small_cases(12))
def test_random_small_shapes(b, c, h, w, mask_kind, layout, chunk):
    """Seeded random small shapes, layouts and masks (seed 9 includes H = 1, W = 1 and C = 1)."""
    mask = make_mask(mask_kind, b, h, w).to(DEVICE)
    feat = make_features(b, c, h, w, layout, torch.float32, device=DEVICE)
    with forced_launch(chunk=chunk):
        check_map(feat, mask, 1e-5, 1e-4)
        check_loss(feat, mask, 1e-5, 1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="counts the interpreter's launches")
def test_loss_takes_four_launches_and_its_backward_one(monkeypatch):
    """The loss is 4 Triton launches and no torch compute op (allocations and views only), its
    backward 1: masked sums, logits, loss terms, finalize; gradient."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from triton.runtime.interpreter import InterpretedFunction

    launched = []
    run = InterpretedFunction.run

    def counting_run(self, *args, **kwargs):
        launched.append(self.fn.__name__)
        return run(self, *args, **kwargs)

    class TorchOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    free = {"empty", "empty_strided", "view", "_unsafe_view", "reshape", "select", "detach", "alias", "promote_types"}
    free.add("relation_distill_loss")  # the custom op itself
    monkeypatch.setattr(InterpretedFunction, "run", counting_run)
    student = make_features(2, 17, 7, 9, "nchw", torch.float32, device=DEVICE)
    teacher = make_features(2, 17, 7, 9, "cl", torch.float32, device=DEVICE).detach()
    mask = make_mask("soft", 2, 7, 9)
    with TorchOps() as fwd_ops:
        loss = relation_distill_loss_triton(student, teacher, mask, gamma=GAMMA)
    assert launched == ["_pair_sums_kernel", "_pair_logits_kernel", "_pair_terms_kernel", "_finalize_kernel"]
    assert not set(fwd_ops.ops) - free, f"torch compute ops in the forward: {set(fwd_ops.ops) - free}"
    launched.clear()
    (grad,) = torch.autograd.grad(loss, student)
    assert launched == ["_grad_kernel"]
    ref = relation_distill_loss_reference(student, teacher, mask, gamma=GAMMA)
    close(loss, ref, 1e-5, 1e-4)
    (grad_ref,) = torch.autograd.grad(ref, student)
    close(grad, grad_ref, 1e-5, 1e-4)


@pytest.mark.slow
def test_wide_map_many_programs():
    """C = 256 at 64x64 (eight channel blocks) with eight programs per sample to combine."""
    mask = make_mask("binary", 1, 64, 64).to(DEVICE)
    feat = make_features(1, 256, 64, 64, "nchw", torch.float32, device=DEVICE)
    with forced_launch(chunk=512):
        check_map(feat, mask, 1e-5, 1e-4)
        check_loss(feat, mask, 1e-5, 1e-4)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "c{BLOCK_C}-n{BLOCK_N}".format(**c.kwargs))
def test_every_tile_config(config):
    """Each autotune config (two channel blocks at C = 48, chunks of 64 pixels at 7x13)."""
    mask = make_mask("mixed", 3, 7, 13).to(DEVICE)
    feat = make_features(3, 48, 7, 13, "nchw", torch.float32, device=DEVICE)
    with forced_launch(config, chunk=64):
        check_map(feat, mask, 1e-5, 1e-4)
        check_loss(feat, mask, 1e-5, 1e-4)


@pytest.mark.parametrize(
    ("scale", "offset"),
    [pytest.param(100.0, 0.0, id="gamma-dist-over-1000"), pytest.param(1.0, 1000.0, id="offset-1000")],
)
def test_large_magnitudes(scale, offset):
    """gamma * ||f - F_i||^2 far over 1,000 (exp underflows for all but the nearest pixels), and
    a large common offset (where an expanded distance would cancel): finite and correct."""
    mask = make_mask("binary", 3, 7, 13).to(DEVICE)
    feat = (torch.randn(3, 32, 7, 13) * scale + offset).to(DEVICE).requires_grad_(True)
    f = kernels.relation.foreground_mean(feat.detach(), mask)
    dist = (feat.detach() - f[:, :, None, None]).square().sum(dim=1)
    assert scale == 1.0 or (GAMMA * dist).max() > 1000.0
    out = relation_map_triton(feat, mask, gamma=GAMMA)
    assert torch.isfinite(out).all()
    # fp32 logits of magnitude |z| ~ 2,000 carry errors of a few ulp (~1e-3) on either side,
    # and a pixel's share exp(z_i - z_max) inherits that as a relative error.
    check_map(feat, mask, 1e-3, 5e-3)
    check_loss(feat, mask, 1e-3, 5e-3, scale=scale)


def test_teacher_gets_no_gradient_and_identical_maps_give_zero():
    mask = make_mask("binary", 3, 7, 13).to(DEVICE)
    student = make_features(3, 32, 7, 13, "nchw", torch.float32, device=DEVICE)
    teacher = student.detach().clone().requires_grad_(True)
    loss = kernels.relation_distill_loss(student, teacher, mask, gamma=GAMMA, impl="triton")
    loss.backward()
    assert teacher.grad is None
    assert loss.item() == 0.0
    assert torch.count_nonzero(student.grad) == 0
    # called directly, a teacher that requires grad still gets none
    teacher2 = torch.randn_like(teacher).requires_grad_(True)
    relation_distill_loss_triton(student, teacher2, mask, gamma=GAMMA).backward()
    assert teacher2.grad is None


def test_public_api_dispatch_and_no_grad_path():
    mask = make_mask("soft", 3, 7, 13).to(DEVICE)
    student = torch.randn(3, 32, 7, 13, device=DEVICE)
    teacher = torch.randn(3, 32, 7, 13, device=DEVICE)
    with torch.no_grad():
        loss = kernels.relation_distill_loss(student, teacher, mask, gamma=GAMMA, impl="triton")
        rmap = kernels.relation_map(student, mask, gamma=GAMMA, impl="triton")
    close(loss, relation_distill_loss_reference(student, teacher, mask, gamma=GAMMA), 1e-5, 1e-4)
    close(rmap, relation_map_reference(student, mask, gamma=GAMMA), 1e-5, 1e-4)


def test_mixed_dtypes_and_bf16_wrapper():
    """fp16 student with an fp32 teacher computes in fp32; bf16 (exact fp32 on the interpreter,
    the bf16 kernels on a GPU) returns a bf16 gradient."""
    mask = make_mask("binary", 3, 7, 13).to(DEVICE)
    student = make_features(3, 32, 7, 13, "nchw", torch.float16, device=DEVICE)
    teacher = torch.randn(3, 32, 7, 13, device=DEVICE)
    loss = relation_distill_loss_triton(student, teacher, mask, gamma=GAMMA)
    ref = relation_distill_loss_reference(student, teacher, mask, gamma=GAMMA)
    close(loss, ref, 1e-5, 1e-4)
    (grad,) = torch.autograd.grad(loss, student)
    (grad_ref,) = torch.autograd.grad(ref, student)
    assert grad.dtype == torch.float16
    close(grad, grad_ref, 2e-3, 2e-3)
    check_map(make_features(3, 32, 7, 13, "nchw", torch.bfloat16, device=DEVICE), mask, 1e-2, 1e-2)


def test_deterministic():
    mask = make_mask("soft", 3, 7, 13).to(DEVICE)
    student = make_features(3, 48, 7, 13, "nchw", torch.float32, device=DEVICE)
    teacher = torch.randn(3, 48, 7, 13, device=DEVICE)
    runs = []
    for _ in range(2):
        loss = relation_distill_loss_triton(student, teacher, mask, gamma=GAMMA)
        runs.append((loss.detach(), torch.autograd.grad(loss, student)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_bad_inputs_name_the_argument():
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    mask = torch.ones(2, 1, 5, 5, device=DEVICE)
    with pytest.raises(ValueError, match="feat must be"):
        relation_map_triton(x[0], mask, gamma=GAMMA)
    with pytest.raises(ValueError, match="mask must be"):
        relation_map_triton(x, mask[:, :, :4], gamma=GAMMA)
    with pytest.raises(ValueError, match="teacher"):
        relation_distill_loss_triton(x, x[:, :3], mask, gamma=GAMMA)
    with pytest.raises(ValueError, match="float64"):
        relation_map_triton(x.double(), mask, gamma=GAMMA)
    with pytest.raises(ValueError, match="non-empty"):
        relation_map_triton(x[:0], mask[:0], gamma=GAMMA)
