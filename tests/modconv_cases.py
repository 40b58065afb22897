"""Cases of the masked modulated convolution tests (interpreter and CUDA): inputs, both runs, comparison."""

from __future__ import annotations

import dataclasses

import torch

from giftnet.kernels import masked_modconv2d
from giftnet.kernels.masked_modconv import masked_modconv2d_reference
from giftnet.kernels.testing import make_mask


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int
    channels: int
    height: int
    width: int
    mask: str  # empty, full, soft, hard (random 0/1) or another giftnet.kernels.testing.MASK_KINDS kind
    demodulate: bool
    channels_last: bool

    def __str__(self) -> str:
        layout = "cl" if self.channels_last else "nchw"
        demod = "demod" if self.demodulate else "nodemod"
        return f"b{self.batch}-c{self.channels}-{self.height}x{self.width}-{self.mask}-{demod}-{layout}"


def make_inputs(case: Case, dtype: torch.dtype, device: str | torch.device = "cpu"):
    """x, weight, style, mask and one upstream gradient dy, all in `dtype` (weights near a GIFT init)."""
    b, c, h, w = case.batch, case.channels, case.height, case.width
    x = torch.randn(b, c, h, w)
    weight = torch.randn(c, c, 3, 3) / (3.0 * c**0.5)
    style = torch.rand(b, c) + 0.5
    if case.mask == "empty":
        mask = torch.zeros(b, 1, h, w)
    elif case.mask == "full":
        mask = torch.ones(b, 1, h, w)
    elif case.mask == "soft":
        mask = torch.rand(b, 1, h, w)
    elif case.mask == "hard":
        mask = (torch.rand(b, 1, h, w) > 0.5).float()
    else:  # one_pixel, blob, mixed: drawn from torch's global generator like the rest
        mask = make_mask(case.mask, b, h, w, torch.Generator().manual_seed(int(torch.randint(2**31, ()))))
    dy = torch.randn(b, c, h, w)
    if case.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        dy = dy.contiguous(memory_format=torch.channels_last)
    return [t.to(device=device, dtype=dtype) for t in (x, weight, style, mask, dy)]


def run_both(case: Case, dtype: torch.dtype, ref_dtype: torch.dtype, device="cpu"):
    """(kernel, reference) lists [y, dx, dweight, dstyle]; the reference runs on the same inputs cast to ref_dtype."""
    x, weight, style, mask, dy = make_inputs(case, dtype, device)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, style)]
    y = masked_modconv2d(*leaves, mask, demodulate=case.demodulate, impl="triton")
    y.backward(dy)
    got = [y.detach()] + [t.grad for t in leaves]

    ref_leaves = [t.detach().to(ref_dtype).requires_grad_(True) for t in (x, weight, style)]
    y_ref = masked_modconv2d_reference(*ref_leaves, mask.to(ref_dtype), demodulate=case.demodulate)
    y_ref.backward(dy.to(ref_dtype))
    want = [y_ref.detach()] + [t.grad for t in ref_leaves]
    return got, want


def assert_matches(got, want, dtype: torch.dtype, atol: float, rtol: float) -> None:
    for name, g, w in zip(("y", "dx", "dweight", "dstyle"), got, want, strict=True):
        assert g is not None, f"{name} is missing"
        assert g.dtype == dtype, f"{name} is {g.dtype}, expected {dtype}"
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g.to(w.dtype), w, atol=atol * scale, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")
