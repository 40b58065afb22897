"""The Triton masked modulated convolution on a CUDA GPU (skipped without one).

GiftNet-like shapes compiled for the device and autotuned, in fp32, fp16 and bf16, plus one
awkward shape (partial tiles everywhere) with every autotune config forced in turn; deterministic
gradients. The awkward shapes of tests/test_masked_modconv_triton.py (channels 3 and 17, 7x13
images, ...) are covered by the interpreter and would each cost an autotune here, so they are not
repeated. The reference runs in fp64 on the same (cast) inputs.

Tolerances (`atol` relative to the expected tensor's largest magnitude, `rtol` plain):
fp32 (2e-3, 1e-2): tl.dot rounds fp32 operands to TF32 (as cuDNN convolutions do by default);
fp16 (2e-3, 1e-2); bf16 (1.5e-2, 3e-2): 8-bit mantissa on x*m*s, the weights and the result.
"""

from __future__ import annotations

import pytest
import torch
from modconv_cases import Case, assert_matches, make_inputs, run_both

from giftnet.kernels import masked_modconv2d
from giftnet.kernels._dispatch import forced_launch
from giftnet.kernels.masked_modconv import demodulation_coefficients, masked_modconv2d_reference
from giftnet.kernels.testing import TOLERANCES

DEVICE = "cuda"
GPU_TOLERANCES = TOLERANCES["modconv", "gpu"]
# Smaller versions of the GiftNet sites (C 32 ... 256), both layouts, realistic and edge masks.
GIFTNET_LIKE = (
    Case(2, 32, 64, 64, "blob", True, True),
    Case(2, 64, 32, 32, "soft", True, False),
    Case(2, 128, 16, 16, "one_pixel", True, True),
    Case(2, 256, 8, 8, "full", False, False),
    Case(3, 64, 17, 9, "empty", True, True),
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize(("dtype", "atol", "rtol"), [(d, *t) for d, t in GPU_TOLERANCES.items()])
@pytest.mark.parametrize("case", GIFTNET_LIKE, ids=str)
def test_forward_and_gradients_match_reference(dtype, atol, rtol, case):
    got, want = run_both(case, dtype, torch.float64, device=DEVICE)
    assert_matches(got, want, dtype, atol, rtol)
    if case.channels_last:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", list(GPU_TOLERANCES))
def test_every_autotune_config(dtype):
    """Each config the autotuner may pick is correct, not only the one it picks here."""
    from giftnet.kernels.masked_modconv import launch, launch_grads

    atol, rtol = GPU_TOLERANCES[dtype]
    b, c, h, w = 2, 80, 19, 37  # partial tiles in every direction, several slots
    x, weight, style, mask, dy = make_inputs(Case(b, c, h, w, "soft", True, True), dtype, DEVICE)
    s32 = style.float()
    d = demodulation_coefficients(weight, s32)
    want_y = masked_modconv2d_reference(*(t.double() for t in (x, weight, style, mask)))
    ref = [t.double().requires_grad_(True) for t in (weight, style)]
    masked_modconv2d_reference(x.double(), *ref, mask.double()).backward(dy.double())
    wpack = launch.pack_weight_forward(weight, dtype)
    for cfg in launch.FWD_CONFIGS:
        with forced_launch(cfg):
            y = launch.conv3x3_scale_blend(x, wpack, s32, d, mask, x)
        scale = want_y.abs().max().item()
        torch.testing.assert_close(y.double(), want_y, atol=atol * scale, rtol=rtol, msg=lambda m, k=cfg: f"{k}: {m}")
    # A forced config holds for the finalize too (its BLOCK_O and BLOCK_I, its warps): the two
    # partials configs run it in the tiles and warps of its own two configs.
    assert {(c.kwargs["BLOCK_O"], c.num_warps) for c in launch_grads.GRAD_CONFIGS} == {
        (c.kwargs["BLOCK_O"], c.num_warps) for c in launch_grads.FIN_CONFIGS
    }
    for cfg in launch_grads.GRAD_CONFIGS:
        with forced_launch(cfg):
            got = launch_grads.weight_style_grads(dy, x, mask, weight, s32, d, slots=3)
        for g, want in zip(got, (ref[0].grad, ref[1].grad), strict=True):
            scale = want.abs().max().item()
            torch.testing.assert_close(g.double(), want, atol=atol * scale, rtol=rtol, msg=lambda m, k=cfg: f"{k}: {m}")


def test_gradients_are_deterministic():
    x, weight, style, mask, dy = make_inputs(Case(2, 64, 48, 48, "soft", True, True), torch.bfloat16, DEVICE)
    grads = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, style)]
        masked_modconv2d(*leaves, mask, impl="triton").backward(dy)
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_auto_picks_the_kernel_on_cuda():
    x, weight, style, mask, _ = make_inputs(Case(1, 32, 16, 16, "soft", True, False), torch.float16, DEVICE)
    auto = masked_modconv2d(x, weight, style, mask)
    assert torch.equal(auto, masked_modconv2d(x, weight, style, mask, impl="triton"))


def test_under_autocast_the_kernel_computes_in_the_activation_dtype():
    """fp32 activations under bf16 autocast: the kernel ignores autocast (fp32 in, fp32 out)."""
    x, weight, style, mask, dy = make_inputs(Case(2, 32, 16, 16, "soft", True, False), torch.float32, DEVICE)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, style)]
    with torch.autocast(device_type=torch.device(DEVICE).type, dtype=torch.bfloat16):
        y = masked_modconv2d(*leaves, mask, impl="triton")
    y.backward(dy)
    ref = [t.double().requires_grad_(True) for t in (x, weight, style)]
    y_ref = masked_modconv2d_reference(*ref, mask.double())
    y_ref.backward(dy.double())
    got = [y.detach()] + [t.grad for t in leaves]
    assert_matches(got, [y_ref.detach()] + [t.grad for t in ref], torch.float32, *GPU_TOLERANCES[torch.float32])
