"""Masked modulated-demodulated 3x3 convolution, the transformation at every GIFT site.

    y = m * conv3x3(m * x, W''_b, padding=1) + (1 - m) * x,   W''_b[o, i, k] = W[o, i, k] s[b, i] d[b, o]

One package per kernel op, each with the same files (copy them for a new op):
    __init__.py   the public op: argument checks, `impl=` dispatch, AOT registration
    reference.py  argument checks and the pure-PyTorch reference (what the kernels are tested against)
    jit.py        the @triton.jit kernels (here jit.py: the conv; jit_grads.py: the weight and style gradients)
    launch.py     tile configs (triton.Config) and launchers (giftnet.kernels._dispatch.launch; launch_grads.py)
    autograd.py   the torch.autograd.Function and the Triton entry point
    aot.py        the ahead-of-time compile specs of every launch
"""

from __future__ import annotations

import torch

from giftnet.kernels._dispatch import register_aot_specs, resolve_impl, triton_installed
from giftnet.kernels.masked_modconv.reference import (
    OP,
    check_modconv_args,
    demodulation_coefficients,
    masked_modconv2d_reference,
)

__all__ = ["OP", "check_modconv_args", "demodulation_coefficients", "masked_modconv2d", "masked_modconv2d_reference"]


def masked_modconv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    mask: torch.Tensor,
    *,
    demodulate: bool = True,
    eps: float = 1e-8,
    impl: str = "auto",
) -> torch.Tensor:
    """m * conv3x3(m * x, W''_b) + (1 - m) * x with per-sample modulation by `style`.

    x: (B, C, H, W); weight: (C, C, 3, 3); style: (B, C); mask: (B, 1, H, W) in [0, 1].
    Gradients flow to x, weight and style; the mask is treated as a constant.
    impl: "auto" (Triton on CUDA, reference elsewhere), "reference" or "triton".
    """
    check_modconv_args(x, weight, style, mask)
    if resolve_impl(OP, impl, x, weight, style, mask) == "triton":
        from giftnet.kernels.masked_modconv.autograd import masked_modconv2d_triton  # imports triton: only when used

        return masked_modconv2d_triton(x, weight, style, mask, demodulate=demodulate, eps=eps)
    return masked_modconv2d_reference(x, weight, style, mask.detach(), demodulate=demodulate, eps=eps)


def _aot_specs() -> list:
    from giftnet.kernels.masked_modconv.aot import aot_specs

    return aot_specs()


register_aot_specs(OP, _aot_specs)

if triton_installed():
    # Registers the torch custom ops now, not at the first call: a torch.compile that traces the
    # first call must find them (an import inside a traced function could break the graph).
    from giftnet.kernels.masked_modconv import autograd as _autograd  # noqa: F401
