"""Triton masked modulated-demodulated 3x3 convolution: autograd wrapper and public function.

    y = m * d[b, o] * conv3x3(m * x * s[b, i], W) + (1 - m) * x

Forward: one implicit-GEMM pass (kernels.masked_modconv.jit) with the style applied to the
input tile as it is loaded and the demodulation, mask and blend in the epilogue; per-sample
weights never exist. Backward: dx with the same kernel on the mirrored, transposed weights;
dW and dstyle from the per-sample tap correlation G (`tap_correlation`) plus small
fp32 torch math. Inputs in fp32, fp16 or bf16, accumulation and coefficients in fp32. fp32
operands go through tl.dot's default TF32 on the GPU, as cuDNN convolutions do by default.
NCHW and channels_last are both handled natively (strides are passed; no layout copies).
"""

from __future__ import annotations

import torch

from kernels.masked_modconv.launch import (
    conv3x3_scale_blend,
    dense,
    pack_weight_forward,
    pack_weight_transposed,
    tap_correlation,
)
from kernels.masked_modconv.reference import demodulation_coefficients

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


def weight_style_grads(
    corr: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    d: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dW (C, C, 3, 3) and dstyle (B, C) in fp32 from G (B, 9, C, C), with d = None when not demodulating.

    u = conv(x m s, W) and y = m d u + (1 - m) x give, with W9[k, o, i] = W[o, i, k]:
      dW[o,i,k]   = sum_b d s G - W sum_b t s^2         t[b, o] = d^3 sum_p g u = d^3 sum_{i,k} W s G
      dstyle[b,i] = sum_{o,k} d W G - s sum_o t sum_k W^2
    """
    w9 = weight.detach().float().permute(2, 3, 0, 1)  # (3, 3, O, I) viewed as (9, O, I) below
    w9 = w9.reshape(9, *w9.shape[2:])
    s = style.detach().float()
    wg = (corr * w9).sum(1)  # (B, O, I): sum_k W G
    if d is None:
        dstyle = wg.sum(1)
        dweight = torch.einsum("bkoi,bi->koi", corr, s)
    else:
        dstyle = torch.einsum("boi,bo->bi", wg, d)
        dweight = torch.einsum("bkoi,boi->koi", corr, d[:, :, None] * s[:, None, :])
        t = (wg * s[:, None, :]).sum(-1) * d.pow(3)  # (B, O)
        dstyle = dstyle - s * (t @ w9.square().sum(0))
        dweight = dweight - w9 * (t.t() @ s.square())[None]
    return dweight.reshape(3, 3, *dweight.shape[1:]).permute(2, 3, 0, 1), dstyle
