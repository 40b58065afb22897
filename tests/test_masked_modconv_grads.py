"""The masked modulated convolution's weight and style gradients (kernels/masked_modconv/jit_grads.py),
under the interpreter on CPU.

The backward computes dW and dstyle in two launches without a per-sample correlation buffer:
a partials kernel over (tap, channel tile, slot), a slot being a group of samples or a band of
rows, and a finalize. Checked here, against the reference autograd: the output and every
gradient (dx, dW, dstyle) from one upstream gradient, with small tiles and slot counts forced
through giftnet.kernels._dispatch.forced_launch so that several channel tiles (in the partials
kernel and in the finalize), several sample groups (the last one short) and several row bands
(the last one partial) occur; batch 1; channels 3, 17, 48; odd sizes; empty, full, one-pixel,
blob, soft and random masks; demodulation on and off; NCHW and channels_last; fp32 and fp16
with their tolerances. And that no (.., B, 9, C, C) buffer is allocated.
"""

from __future__ import annotations

import pytest
import torch
import triton
from modconv_cases import Case, assert_matches, make_inputs, run_both

from giftnet import kernels
from giftnet.kernels._dispatch import forced_launch, interpreter_enabled
from giftnet.kernels.masked_modconv import demodulation_coefficients, masked_modconv2d_reference
from giftnet.kernels.masked_modconv import launch_grads as lg

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() or not interpreter_enabled(),
    reason="interpreter tests run on CPU machines (TRITON_INTERPRET=1); GPUs run test_masked_modconv_cuda.py",
)

TOLERANCES = kernels.testing.TOLERANCES["modconv", "interpreter"]


def _tile(block: int, bh: int = 4, bw: int = 8) -> triton.Config:
    """Channel tiles of `block` (partials, conv and finalize), bh x bw pixel steps."""
    meta = {"BLOCK_O": block, "BLOCK_I": block, "BLOCK_H": bh, "BLOCK_W": bw}
    return triton.Config(meta, num_warps=4, num_stages=1)


# (case, dtype, channel tile, slots wanted): a cover, not a product. Slots wanted > batch become
# row bands (16 rows each), <= batch groups of samples.
CASES = (
    (Case(1, 3, 7, 13, "soft", True, False), torch.float32, 16, 1),
    (Case(1, 17, 19, 9, "blob", True, True), torch.float32, 16, 2),  # 2 bands, the last of 3 rows
    (Case(3, 17, 9, 11, "one_pixel", False, False), torch.float32, 16, 2),  # groups of 2 and 1
    (Case(2, 48, 7, 9, "full", True, True), torch.float32, 32, 2),  # 2 x 2 tiles, the last of 16
    (Case(3, 3, 17, 5, "empty", True, False), torch.float32, 16, 6),  # 3 samples x 2 bands
    (Case(1, 48, 5, 7, "hard", False, True), torch.float32, 16, 1),  # 3 x 3 tiles
    (Case(2, 17, 7, 7, "soft", True, False), torch.float16, 16, 2),
    (Case(1, 17, 17, 11, "blob", False, True), torch.float16, 16, 2),  # the last band 1 row
    (Case(3, 48, 7, 5, "one_pixel", True, True), torch.float16, 32, 3),
    (Case(1, 3, 9, 9, "full", True, False), torch.float16, 16, 1),
)


@pytest.mark.parametrize(
    ("case", "dtype", "block", "slots"),
    CASES,
    ids=[f"{c}-{'fp32' if d == torch.float32 else 'fp16'}-t{b}-s{s}" for c, d, b, s in CASES],
)
def test_output_and_gradients_match_reference_with_small_tiles_and_slots(case, dtype, block, slots):
    with forced_launch(_tile(block), slots=slots):
        got, want = run_both(case, dtype, torch.float32)
    assert_matches(got, want, dtype, *TOLERANCES[dtype])


def _reference_weight_style_grads(x, weight, style, mask, dy, demodulate):
    leaves = [weight.clone().requires_grad_(True), style.clone().requires_grad_(True)]
    masked_modconv2d_reference(x, *leaves, mask, demodulate=demodulate).backward(dy)
    return [t.grad for t in leaves]


@pytest.mark.parametrize(("demodulate", "slots"), [(True, 1), (True, 4), (False, 2)])
def test_launcher_matches_reference(demodulate, slots):
    """The launcher alone (no forward, no dx) at 1 slot (a group of 2 samples), 2 (groups of 1)
    and 4 (2 samples x 2 row bands)."""
    x, weight, style, mask, dy = make_inputs(Case(2, 17, 17, 5, "soft", demodulate, True), torch.float32)
    d = demodulation_coefficients(weight, style) if demodulate else None
    want = _reference_weight_style_grads(x, weight, style, mask, dy, demodulate)
    with forced_launch(_tile(16)):
        got = lg.weight_style_grads(dy, x, mask, weight, style, d, slots=slots)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=2e-5 * w.abs().max().item(), rtol=1e-4)


def test_gradients_come_in_the_dtypes_of_weight_and_style():
    x, weight, style, mask, dy = make_inputs(Case(1, 3, 5, 7, "soft", True, False), torch.float32)
    dw, ds = lg.weight_style_grads(dy, x, mask, weight.double(), style, None, style_dtype=torch.float16)
    assert dw.dtype == torch.float64 and dw.is_contiguous() and dw.shape == weight.shape
    assert ds.dtype == torch.float16 and ds.shape == style.shape


def test_backward_allocates_no_per_sample_correlation_buffer(monkeypatch):
    """Every tensor the backward allocates is under half a (B, 9, C, C) correlation buffer."""
    b, c = 6, 17
    x, weight, style, mask, dy = make_inputs(Case(b, c, 7, 5, "soft", True, False), torch.float32)
    sizes: list[tuple[str, tuple[int, ...]]] = []
    for name in ("empty", "zeros", "empty_like", "zeros_like", "ones_like", "empty_strided"):
        real = getattr(torch, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            out = _real(*args, **kwargs)
            sizes.append((_name, tuple(out.shape)))
            return out

        monkeypatch.setattr(torch, name, spy)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, style)]
    y = kernels.masked_modconv2d(*leaves, mask, impl="triton")
    sizes.clear()  # the backward's allocations only
    with forced_launch(_tile(32), slots=2):
        y.backward(dy)
    monkeypatch.undo()
    assert sizes, "the spy saw no allocation"
    per_sample_corr = b * 9 * c * c
    big = [(n, s) for n, s in sizes if torch.Size(s).numel() >= per_sample_corr // 2]
    assert not big, f"allocations as large as a per-sample correlation buffer: {big}"
    assert ("empty", (2, 9, c, c)) in sizes, f"no (slots, 9, C, C) dW partial buffer among {sizes}"
    want = _reference_weight_style_grads(x, weight, style, mask, dy, True)
    for g, w in zip((leaves[1].grad, leaves[2].grad), want, strict=True):
        torch.testing.assert_close(g, w, atol=2e-5 * w.abs().max().item(), rtol=1e-4)


def test_choose_slots_fills_the_gpu_within_bounds():
    # E4 on an H200: 16 samples, C = 256 at 32 x 32: 4 slots of 4 samples, no bands.
    assert lg.choose_slots(16, 256, 32, 32, 132) == lg.Slots(4, 32, 4, 1)
    # E1: C = 32 at 256 x 256: more slots than samples, so 4 bands of 64 rows per sample.
    assert lg.choose_slots(16, 32, 256, 256, 132) == lg.Slots(1, 64, 16, 4)
    # bands hold at least MIN_CHUNK_PIXELS unless slots are asked for
    assert lg.choose_slots(1, 32, 40, 20, 132).n_bands == 1
    assert lg.choose_slots(1, 32, 40, 20, 132, want=3) == lg.Slots(1, 16, 1, 3)
    for args in ((16, 256, 32, 32, 132), (3, 17, 19, 9, 4), (64, 1024, 8, 8, 132)):
        sl = lg.choose_slots(*args)
        assert sl.count * 9 * args[1] ** 2 * 4 <= max(lg.MAX_PARTIAL_BYTES, 9 * args[1] ** 2 * 4)
        assert sl.group * sl.n_groups >= args[0] > sl.group * (sl.n_groups - 1)
        assert sl.band_rows * sl.n_bands >= args[2] > sl.band_rows * (sl.n_bands - 1)
