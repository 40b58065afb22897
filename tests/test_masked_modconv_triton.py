"""Triton masked modulated convolution vs the PyTorch reference, under the interpreter on CPU.

Every case checks the forward output and the gradients for x, weight and style, all driven by
one shared upstream gradient. The cases are a chosen cover, not a cartesian product (the
interpreter is slow): each of batch {1, 3}, channels {3, 17, 48, 64}, sizes {7x13, 17x9,
32x32}, masks {empty, full, soft, hard}, demodulation on/off and NCHW/channels_last appears
in fp32 and fp16. Small kernel tiles (several output-channel tiles) are covered by driving the
launchers directly with explicit configs; the weight/style gradients' tiles and slots in
tests/test_masked_modconv_grads.py. The helpers here are shared
with tests/test_masked_modconv_cuda.py.

Tolerances: `atol` is relative to the largest magnitude of the expected tensor (gradients of
the weight sum over every pixel and are larger than the output), `rtol` is plain.
fp32: the reference in fp32, (2e-5, 1e-4). fp16: the fp32 reference of the fp16-cast inputs,
(2e-3, 1e-2): the kernel rounds x*m*s and its result to fp16, accumulating in fp32.
"""

from __future__ import annotations

import pytest
import torch
import triton
from modconv_cases import Case, assert_matches, make_inputs, run_both

from giftnet import kernels
from giftnet.kernels import masked_modconv2d
from giftnet.kernels._dispatch import forced_launch, interpreter_enabled
from giftnet.kernels.masked_modconv import demodulation_coefficients, masked_modconv2d_reference

TOLERANCES = kernels.testing.TOLERANCES["modconv", "interpreter"]


FP32_CASES = (
    Case(1, 3, 7, 13, "soft", True, False),
    Case(3, 17, 17, 9, "soft", True, True),
    Case(3, 48, 7, 13, "hard", False, False),
    Case(1, 64, 32, 32, "soft", True, True),
    Case(3, 3, 32, 32, "empty", True, False),
    Case(1, 17, 7, 13, "full", True, False),
    Case(3, 64, 17, 9, "full", False, True),
    Case(1, 48, 32, 32, "soft", False, False),
    Case(3, 64, 32, 32, "soft", True, True),
)
FP16_CASES = (
    Case(3, 17, 7, 13, "soft", True, False),
    Case(1, 48, 17, 9, "hard", True, True),
    Case(1, 64, 32, 32, "soft", True, False),
    Case(3, 3, 17, 9, "full", False, True),
    Case(1, 17, 32, 32, "empty", True, True),
    Case(3, 48, 32, 32, "hard", False, False),
)


pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() or not interpreter_enabled(),
    reason="interpreter tests run on CPU machines (TRITON_INTERPRET=1); GPUs run test_masked_modconv_cuda.py",
)


# Over 10 s each on 2 CPU cores: marked slow (the other cases cover the same paths at smaller sizes).
SLOW = {(torch.float32, FP32_CASES[8]), (torch.float16, FP16_CASES[5])}


def _params(dtype, cases):
    marks = lambda c: [pytest.mark.slow] if (dtype, c) in SLOW else []  # noqa: E731
    name = "fp32" if dtype == torch.float32 else "fp16"
    return [pytest.param(dtype, *TOLERANCES[dtype], c, marks=marks(c), id=f"{name}-{c}") for c in cases]


@pytest.mark.parametrize(
    ("dtype", "atol", "rtol", "case"), _params(torch.float32, FP32_CASES) + _params(torch.float16, FP16_CASES)
)
def test_forward_and_gradients_match_reference(dtype, atol, rtol, case):
    got, want = run_both(case, dtype, torch.float32)
    assert_matches(got, want, dtype, atol, rtol)
    if case.channels_last:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_small_tiles_cover_several_output_channel_tiles():
    """Forward and input-gradient launches with 2 output-channel tiles and 3 input-channel steps."""
    from giftnet.kernels.masked_modconv.launch import conv3x3_scale_blend, pack_weight_forward, pack_weight_transposed

    x, weight, style, mask, dy = make_inputs(Case(1, 48, 7, 13, "soft", True, False), torch.float32)
    d = demodulation_coefficients(weight, style)
    small = triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_O": 32, "BLOCK_I": 16}, num_warps=4, num_stages=1)
    with forced_launch(small):
        y = conv3x3_scale_blend(x, pack_weight_forward(weight, x.dtype), style, d, mask, x)
    torch.testing.assert_close(y, masked_modconv2d_reference(x, weight, style, mask), atol=2e-5, rtol=1e-4)

    # With the mirrored, transposed packing the same kernel is the adjoint: the input gradient.
    with forced_launch(small):
        dx = conv3x3_scale_blend(dy, pack_weight_transposed(weight, x.dtype), d, style, mask, dy)
    xs = x.clone().requires_grad_(True)
    masked_modconv2d_reference(xs, weight, style, mask).backward(dy)
    torch.testing.assert_close(dx, xs.grad, atol=2e-5, rtol=1e-4)


def test_expanded_gradient_mixed_layouts_and_partial_requires_grad():
    """dy with zero strides (from y.sum()), x channels_last, weight and style without gradients."""
    x, weight, style, mask, _ = make_inputs(Case(1, 17, 9, 11, "soft", True, True), torch.float32)
    xs = x.clone().requires_grad_(True)
    masked_modconv2d(xs, weight, style, mask, impl="triton").sum().backward()
    xr = x.clone().requires_grad_(True)
    masked_modconv2d_reference(xr, weight, style, mask).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad, atol=2e-5, rtol=1e-4)


def test_channels_last_crop_is_read_in_place():
    """A crop of a channels_last map (not contiguous in any format) goes to the kernels as it is."""
    from giftnet.kernels.masked_modconv.launch import dense

    x, weight, style, mask, dy = make_inputs(Case(1, 17, 11, 13, "soft", True, True), torch.float32)
    crop = x[:, :, 1:-1, 2:-1]
    assert not crop.is_contiguous(memory_format=torch.channels_last)
    assert dense(crop).data_ptr() == crop.data_ptr()
    xs = crop.clone().requires_grad_(False)
    leaves = [weight.clone().requires_grad_(True), style.clone().requires_grad_(True)]
    m, g = mask[:, :, 1:-1, 2:-1], dy[:, :, 1:-1, 2:-1]
    y = masked_modconv2d(crop, *leaves, m, impl="triton")
    y.backward(g)
    ref = [weight.clone().requires_grad_(True), style.clone().requires_grad_(True)]
    y_ref = masked_modconv2d_reference(xs, *ref, m)
    y_ref.backward(g)
    for got, want in zip([y, *(t.grad for t in leaves)], [y_ref, *(t.grad for t in ref)], strict=True):
        torch.testing.assert_close(
            got.detach(), want.detach(), atol=2e-5 * max(1.0, want.abs().max().item()), rtol=1e-4
        )


def test_mask_and_style_in_other_dtypes():
    """fp16 activations with an fp32 mask, weight and style (as under mixed precision)."""
    x, weight, style, mask, dy = make_inputs(Case(1, 17, 7, 13, "soft", True, False), torch.float32)
    xh = x.half().requires_grad_(True)
    leaves = [weight.clone().requires_grad_(True), style.clone().requires_grad_(True)]
    y = masked_modconv2d(xh, *leaves, mask, impl="triton")
    y.backward(dy.half())
    assert y.dtype == torch.float16
    assert leaves[0].grad.dtype == torch.float32
    assert leaves[1].grad.dtype == torch.float32
    ref = [x.half().float().requires_grad_(True), weight.half().float().requires_grad_(True), style.clone()]
    ref[2].requires_grad_(True)
    y_ref = masked_modconv2d_reference(*ref, mask)
    y_ref.backward(dy.half().float())
    atol, rtol = TOLERANCES[torch.float16]
    for g, w in zip([y, xh.grad, *[t.grad for t in leaves]], [y_ref, *[t.grad for t in ref]], strict=True):
        torch.testing.assert_close(g.float(), w.detach(), atol=atol * max(1.0, w.abs().max().item()), rtol=rtol)


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        ({"x": torch.zeros(2, 4, 5)}, "x"),
        ({"weight": torch.zeros(4, 4, 5, 5)}, "weight"),
        ({"style": torch.zeros(2, 3)}, "style"),
        ({"mask": torch.zeros(2, 1, 6, 5)}, "mask"),
        ({"mask": torch.zeros(2, 1, 5, 5, dtype=torch.int64)}, "mask"),
        ({"x": torch.zeros(2, 4, 5, 5, dtype=torch.int32)}, "x"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(bad, name):
    args = {
        "x": torch.zeros(2, 4, 5, 5),
        "weight": torch.zeros(4, 4, 3, 3),
        "style": torch.zeros(2, 4),
        "mask": torch.zeros(2, 1, 5, 5),
    }
    args.update(bad)
    with pytest.raises(ValueError, match=name):
        masked_modconv2d(args["x"], args["weight"], args["style"], args["mask"], impl="triton")
