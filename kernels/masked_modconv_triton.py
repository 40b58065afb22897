"""Triton masked modulated-demodulated 3x3 convolution: autograd wrapper and public function.

    y = m * d[b, o] * conv3x3(m * x * s[b, i], W) + (1 - m) * x

Forward: one implicit-GEMM pass (kernels.masked_modconv_fwd) with the style applied to the
input tile as it is loaded and the demodulation, mask and blend in the epilogue; per-sample
weights never exist. Backward: dx with the same kernel on the mirrored, transposed weights;
dW and dstyle from the per-sample tap correlation G (kernels.masked_modconv_bwd) plus small
fp32 torch math. Inputs in fp32, fp16 or bf16, accumulation and coefficients in fp32. fp32
operands go through tl.dot's default TF32 on the GPU, as cuDNN convolutions do by default.
NCHW and channels_last are both handled natively (strides are passed; no layout copies).
"""

from __future__ import annotations

import torch

from kernels.aot import AotSpec
from kernels.masked_modconv import demodulation_coefficients
from kernels.masked_modconv_bwd import tap_correlation, weight_style_grads
from kernels.masked_modconv_fwd import (
    conv3x3_scale_blend,
    dense,
    pack_weight_forward,
    pack_weight_transposed,
)

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class MaskedModConv2dFunction(torch.autograd.Function):
    """Gradients for x, weight and style; the mask is a constant."""

    @staticmethod
    def forward(ctx, x, weight, style, mask, demodulate: bool, eps: float):
        if x.dtype not in _DTYPES:
            raise ValueError(f"masked_modconv2d: x must be fp32, fp16 or bf16, got {x.dtype}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = dense(x)
            m = dense(mask.detach().to(x.dtype))
            s = style.detach().float().contiguous()
            if demodulate:
                d = demodulation_coefficients(weight.detach(), s, eps).contiguous()
            else:
                d = torch.ones_like(s)
            y = conv3x3_scale_blend(x, pack_weight_forward(weight, x.dtype), s, d, m, x)
        ctx.save_for_backward(x, weight, style, m, d)
        ctx.demodulate = demodulate
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, style, m, d = ctx.saved_tensors
        need_x, need_w, need_s = ctx.needs_input_grad[:3]
        dx = dweight = dstyle = None
        with torch.autocast(device_type=x.device.type, enabled=False):
            dy = dense(dy.to(x.dtype))
            s = style.detach().float().contiguous()
            if need_x:
                dx = conv3x3_scale_blend(dy, pack_weight_transposed(weight, x.dtype), d, s, m, dy)
            if need_w or need_s:
                corr = tap_correlation(dy, x, m)
                dw, ds = weight_style_grads(corr, weight, s, d if ctx.demodulate else None)
                dweight = dw.to(weight.dtype) if need_w else None
                dstyle = ds.to(style.dtype) if need_s else None
        return dx, dweight, dstyle, None, None, None


def masked_modconv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    mask: torch.Tensor,
    *,
    demodulate: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Fused m * conv3x3(m * x, W''_b) + (1 - m) * x; arguments as `kernels.masked_modconv2d`.

    Shapes are validated by the public function; the result has x's dtype and memory format.
    """
    return MaskedModConv2dFunction.apply(x, weight, style, mask, demodulate, eps)


def aot_specs() -> list[AotSpec]:
    """Every (kernel, config, dtype, layout) this op may launch on a GPU."""
    from kernels.masked_modconv_aot import modconv_aot_specs

    return modconv_aot_specs()
