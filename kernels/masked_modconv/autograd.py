"""Triton masked modulated-demodulated 3x3 convolution: autograd wrapper and public function.

    y = m * d[b, o] * conv3x3(m * x * s[b, i], W) + (1 - m) * x

Forward: one implicit-GEMM pass (giftnet.kernels.masked_modconv.jit) with the style applied to the
input tile as it is loaded and the demodulation, mask and blend in the epilogue; per-sample
weights never exist. Backward: dx with the same kernel on the mirrored, transposed weights;
dW and dstyle in two launches (giftnet.kernels.masked_modconv.jit_grads: the tap correlation
folded per sample into small partials, then a finalize), with no per-sample buffer. Inputs in
fp32, fp16 or bf16, accumulation and coefficients in fp32. fp32 operands go through tl.dot's default TF32 on the GPU, as cuDNN convolutions do by default.
NCHW and channels_last are both handled natively (strides are passed; no layout copies).
"""

from __future__ import annotations

import torch
from torch import Tensor

from giftnet.kernels.masked_modconv.launch import (
    conv3x3_scale_blend,
    dense,
    pack_weight_forward,
    pack_weight_transposed,
)
from giftnet.kernels.masked_modconv.launch_grads import weight_style_grads
from giftnet.kernels.masked_modconv.reference import demodulation_coefficients

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# Registered as torch custom ops (forward and backward), so torch.compile of a whole model
# treats each as one opaque node with a fake (shape-only) implementation: no graph break at the
# kernel, and the Python around the launches (layout checks, autotuning) never gets traced.
@torch.library.custom_op("giftnet::masked_modconv2d", mutates_args=())
def _forward_op(
    x: Tensor, weight: Tensor, style: Tensor, mask: Tensor, demodulate: bool, eps: float
) -> tuple[Tensor, Tensor]:
    """(y, d): the result and the (B, C) fp32 demodulation coefficients, saved for the backward
    (which would otherwise recompute them: six small launches)."""
    if x.dtype not in _DTYPES:
        raise ValueError(f"masked_modconv2d: x must be fp32, fp16 or bf16, got {x.dtype}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = dense(x)
        m = dense(mask.detach().to(x.dtype))
        s = style.detach().float().contiguous()
        d = _demod(weight, s, demodulate, eps)
        return conv3x3_scale_blend(x, pack_weight_forward(weight, x.dtype), s, d, m, x), d


def _like(x: Tensor) -> Tensor:
    """An empty tensor shaped as the kernels write their results for x: x's dtype and layout."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty_like(x, memory_format=torch.channels_last if cl else torch.contiguous_format)


@_forward_op.register_fake
def _(x, weight, style, mask, demodulate, eps):
    return _like(x), style.new_empty(style.shape, dtype=torch.float32)


@torch.library.custom_op("giftnet::masked_modconv2d_backward", mutates_args=())
def _backward_op(
    dy: Tensor, x: Tensor, weight: Tensor, style: Tensor, mask: Tensor, d: Tensor, demodulate: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dstyle) in the dtypes of x, weight and style; d: the forward's demodulation."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = dense(x)
        m = dense(mask.detach().to(x.dtype))
        dy = dense(dy.to(x.dtype))
        s = style.detach().float().contiguous()
        dx = conv3x3_scale_blend(dy, pack_weight_transposed(weight, x.dtype), d, s, m, dy)
        dw, ds = weight_style_grads(dy, x, m, weight, s, d if demodulate else None, style_dtype=style.dtype)
        return dx, dw, ds


@_backward_op.register_fake
def _(dy, x, weight, style, mask, d, demodulate):
    return _like(x), torch.empty_like(weight), torch.empty_like(style)


def _demod(weight: Tensor, s: Tensor, demodulate: bool, eps: float) -> Tensor:
    if demodulate:
        return demodulation_coefficients(weight.detach(), s, eps).contiguous()
    return torch.ones_like(s)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, style, mask, demodulate, _eps = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, weight, style, mask, output[1])
    ctx.demodulate = demodulate


def _backward(ctx, dy, _dd):
    """Gradients for x, weight and style; the mask is a constant, d is not differentiable."""
    x, weight, style, mask, d = ctx.saved_tensors
    dx, dw, ds = _backward_op(dy, x, weight, style, mask, d, ctx.demodulate)
    need_x, need_w, need_s = ctx.needs_input_grad[:3]
    return dx if need_x else None, dw if need_w else None, ds if need_s else None, None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def masked_modconv2d_triton(
    x: Tensor,
    weight: Tensor,
    style: Tensor,
    mask: Tensor,
    *,
    demodulate: bool = True,
    eps: float = 1e-8,
) -> Tensor:
    """Fused m * conv3x3(m * x, W''_b) + (1 - m) * x; arguments as `giftnet.kernels.masked_modconv2d`.

    Shapes are validated by the public function; the result has x's dtype and memory format.
    Runs as the custom op torch.ops.giftnet.masked_modconv2d (gradients by its backward op).
    """
    return _forward_op(x, weight, style, mask.detach(), bool(demodulate), float(eps))[0]
