"""Background skip of the masked modulated convolution, under the interpreter on CPU.

The forward, dx and the weight/style gradients' correlation skip 2-D tiles whose mask is 0 everywhere.
The skip must be exact: (1) output and every gradient, from one upstream gradient, match the
reference for masks that put foreground on none, all, one or a few tiles (empty, full, one
pixel, a pixel in a corner or just across a tile edge, blobs, soft) at odd sizes with tiles
clipped by the image border; (2) a skipped tile really is skipped: fed NaN as the convolution
input, it still returns the kept tensor exactly, and a live tile does not (so the test fails
if the skip is lost or if a tile with foreground is skipped).

Small tiles (4x4 pixels) are forced through giftnet.kernels._dispatch.forced_launch so
that images of 5x7 ... 13x11 pixels hold several tiles in both directions.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton
from modconv_cases import assert_matches

from giftnet.kernels import masked_modconv2d
from giftnet.kernels._dispatch import forced_launch, interpreter_enabled
from giftnet.kernels.masked_modconv import demodulation_coefficients, masked_modconv2d_reference
from giftnet.kernels.masked_modconv.launch import conv3x3_scale_blend, pack_weight_forward
from giftnet.kernels.masked_modconv.launch_grads import weight_style_grads
from giftnet.kernels.testing import make_mask, modconv_inputs, tolerance

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() or not interpreter_enabled(),
    reason="interpreter tests run on CPU machines (TRITON_INTERPRET=1)",
)

TILE = triton.Config({"BLOCK_H": 4, "BLOCK_W": 4, "BLOCK_O": 32, "BLOCK_I": 32}, num_warps=4, num_stages=1)


def _pixels(b: int, h: int, w: int, *where: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(b, 1, h, w)
    for y, x in where:
        m[:, :, y, x] = 1.0
    return m


def _mask(kind: str, b: int, h: int, w: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    if kind == "corner":  # the last pixel: the bottom-right tile, clipped by both borders
        return _pixels(b, h, w, (h - 1, w - 1))
    if kind == "edge":  # just right of and below a tile edge: the halo of three skipped tiles
        return _pixels(b, h, w, (4, 4))
    if kind == "two_tiles":
        return _pixels(b, h, w, (0, 0), (h - 1, 0))
    return make_mask(kind, b, h, w, gen)


# (batch, channels, height, width, mask, dtype): a cover, not a product.
CASES = (
    (1, 3, 5, 7, "empty", torch.float32),
    (1, 3, 9, 11, "full", torch.float32),
    (1, 17, 9, 7, "one_pixel", torch.float32),
    (1, 3, 9, 7, "corner", torch.float32),
    (1, 17, 11, 9, "edge", torch.float32),
    (2, 3, 13, 11, "two_tiles", torch.float32),
    (1, 17, 7, 9, "soft", torch.float32),
    (1, 17, 13, 11, "blob", torch.float16),
    (2, 3, 9, 7, "edge", torch.float16),
    (1, 48, 5, 7, "one_pixel", torch.float16),
)


@pytest.mark.parametrize(("b", "c", "h", "w", "kind", "dtype"), CASES, ids=[f"{c[4]}-{c[:4]}-{c[5]}" for c in CASES])
def test_skip_matches_reference_output_and_gradients(b, c, h, w, kind, dtype):
    t = modconv_inputs(b, c, h, w, "empty", torch.Generator().manual_seed(b * 1000 + c * 10 + h))
    mask = _mask(kind, b, h, w).to(dtype)
    x, weight, style, dy = (t[k].to(dtype) for k in ("x", "weight", "style", "dy"))
    leaves = [v.clone().requires_grad_(True) for v in (x, weight, style)]
    with forced_launch(TILE):
        y = masked_modconv2d(*leaves, mask, impl="triton")
        y.backward(dy)
    ref = [v.detach().float().requires_grad_(True) for v in (x, weight, style)]
    y_ref = masked_modconv2d_reference(*ref, mask.float())
    y_ref.backward(dy.float())
    got = [y.detach()] + [v.grad for v in leaves]
    want = [y_ref.detach()] + [v.grad for v in ref]
    assert_matches(got, want, dtype, *tolerance("modconv", "interpreter", dtype))
    background = (mask == 0).expand_as(x)
    assert torch.equal(got[0][background], x[background]), "y must be x exactly where the mask is 0"
    assert torch.equal(got[1][background], dy[background]), "dx must be dy exactly where the mask is 0"


def _live_tiles(mask: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """(B, 1, H, W) bool: True on the pixels of every th x tw tile holding any foreground."""
    h, w = mask.shape[-2:]
    live = F.max_pool2d((mask != 0).float(), (th, tw), ceil_mode=True)
    return live.repeat_interleave(th, -2).repeat_interleave(tw, -1)[..., :h, :w].bool()


def test_background_tiles_do_no_convolution():
    """NaN convolution input: background tiles still return res exactly, live tiles turn NaN."""
    b, c, h, w = 2, 17, 13, 11
    t = modconv_inputs(b, c, h, w, "empty", torch.Generator().manual_seed(3))
    mask = _pixels(b, h, w, (5, 6))
    mask[1] = make_mask("blob", 1, h, w, torch.Generator().manual_seed(4))[0]
    d = demodulation_coefficients(t["weight"], t["style"])
    poison = torch.full_like(t["x"], float("nan"))
    with forced_launch(TILE):
        y = conv3x3_scale_blend(poison, pack_weight_forward(t["weight"], torch.float32), t["style"], d, mask, t["x"])
    live = _live_tiles(mask, 4, 4).expand_as(y)
    assert torch.equal(y[~live], t["x"][~live])
    assert torch.isnan(y[live]).all()
    assert 0 < live[:, 0].float().mean() < 0.6


def test_weight_style_gradients_skip_background_tiles():
    """NaN upstream gradient on every all-background 4x4 tile: dW and dstyle stay finite and exact
    (2 slots: the sample's two row bands, the second of one row)."""
    b, c, h, w = 1, 17, 17, 11
    t = modconv_inputs(b, c, h, w, "empty", torch.Generator().manual_seed(5))
    mask = _pixels(b, h, w, (5, 6), (16, 0))
    live = _live_tiles(mask, 4, 4).expand_as(t["dy"])
    dy = t["dy"].masked_fill(~live, float("nan"))
    d = demodulation_coefficients(t["weight"], t["style"])
    with forced_launch(TILE, slots=2):
        got = weight_style_grads(dy, t["x"], mask, t["weight"], t["style"], d)
    ref = [t["weight"].clone().requires_grad_(True), t["style"].clone().requires_grad_(True)]
    masked_modconv2d_reference(t["x"], *ref, mask).backward(t["dy"])
    for g, want in zip(got, (r.grad for r in ref), strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, want, atol=1e-5 * want.abs().max().item(), rtol=1e-5)
