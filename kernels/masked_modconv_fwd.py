"""Implicit-GEMM 3x3 convolution with per-sample channel scales, input mask and masked blend.

One kernel serves the forward pass and the input gradient of the masked modulated convolution:

    out[b, o, p] = m[b, p] * so[b, o] * sum_{k, i} Wp[k, i, o] * (m * si[b, i] * inp[b, i])[p + off(k)]
                   + (1 - m[b, p]) * res[b, o, p]

forward: inp = x,  si = style, so = demodulation d, Wp[k, i, o] = W[o, i, k], res = x
dx:      inp = dy, si = d,     so = style,          Wp[k, o, i] = W[o, i, 8 - k], res = dy

Per-sample weights never exist in memory: the scales are applied to the input tile as it is
loaded and to the accumulator in the epilogue. A program owns one sample, a tile of BLOCK_P
pixels (flattened h * W + w) and a tile of BLOCK_O output channels, and loops over the 9 taps
times the input-channel tiles, accumulating in fp32 with tl.dot. Channel counts that are not
multiples of the tile (3, 17, ...) are padded by masked loads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._dispatch import interpreter_enabled

# (BLOCK_P, BLOCK_O, BLOCK_I, num_warps, num_stages). GiftNet's sites have C in {32, 64, 128, 256}
# at 256^2 ... 32^2 pixels: many pixels, few channels. The narrow tile serves C = 32, the middle
# one C = 64/128, the wide one C = 128/256. Each compiles without spills for sm_86 and sm_90 with
# Triton 3.6 and 3.9 in fp32/fp16/bf16 and both layouts (tests/test_aot_masked_modconv.py), also
# when specialized on 16-divisible shapes as at the GiftNet sites; 128x128 tiles spill.
CONFIGS = (
    (64, 32, 32, 4, 3),
    (64, 64, 32, 4, 3),
    (128, 64, 32, 8, 3),
)
# Under TRITON_INTERPRET=1 (no autotune) one fixed config; large tiles run fastest there. The
# tests drive small tiles through `config=` to cover several output-channel tiles as well.
INTERPRETER_CONFIG = (128, 64, 32, 4, 1)

AUTOTUNE_KEY = ["C", "H", "W", "stride_ic"]


@triton.jit
def conv3x3_scale_blend_kernel(
    inp_ptr,  # (B, C, H, W) convolution input, any strides
    w_ptr,  # (9, C, C) packed weights [tap, c_in, c_out], contiguous, dtype of inp
    scale_in_ptr,  # (B, C) fp32 contiguous: per-sample input-channel scale
    scale_out_ptr,  # (B, C) fp32 contiguous: per-sample output-channel scale
    mask_ptr,  # (B, 1, H, W) mask in [0, 1], dtype of inp
    res_ptr,  # (B, C, H, W) kept where the mask is 0
    out_ptr,  # (B, C, H, W) result, dtype of inp
    C,  # channels (in = out)
    H,  # height
    W,  # width
    stride_ib,  # inp strides (elements)
    stride_ic,
    stride_ih,
    stride_iw,
    stride_mb,  # mask strides
    stride_mh,
    stride_mw,
    stride_rb,  # res strides
    stride_rc,
    stride_rh,
    stride_rw,
    stride_ob,  # out strides
    stride_oc,
    stride_oh,
    stride_ow,
    BLOCK_P: tl.constexpr,  # pixels per program
    BLOCK_O: tl.constexpr,  # output channels per program
    BLOCK_I: tl.constexpr,  # input channels per reduction step (>= 16 for tl.dot)
):
    pid = tl.program_id(0)
    n_o = (C + BLOCK_O - 1) // BLOCK_O
    pid_o = pid % n_o
    pid_p = pid // n_o
    b = tl.program_id(1).to(tl.int64)

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < H * W
    ph = offs_p // W
    pw = offs_p % W
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = offs_o < C
    arange_i = tl.arange(0, BLOCK_I)

    inp_b = inp_ptr + b * stride_ib
    mask_b = mask_ptr + b * stride_mb
    scale_in_b = scale_in_ptr + b * C
    dot_dtype = w_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    n_i = (C + BLOCK_I - 1) // BLOCK_I
    for step in range(9 * n_i):
        tap = step // n_i
        offs_i = (step - tap * n_i) * BLOCK_I + arange_i
        i_ok = offs_i < C
        hh = ph + (tap // 3 - 1)
        ww = pw + (tap % 3 - 1)
        in_img = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        m = tl.load(mask_b + hh * stride_mh + ww * stride_mw, mask=in_img, other=0.0).to(tl.float32)
        s = tl.load(scale_in_b + offs_i, mask=i_ok, other=0.0)
        a_ptrs = inp_b + (hh * stride_ih + ww * stride_iw)[:, None] + offs_i[None, :] * stride_ic
        a = tl.load(a_ptrs, mask=in_img[:, None] & i_ok[None, :], other=0.0).to(tl.float32)
        a = (a * m[:, None] * s[None, :]).to(dot_dtype)
        w_ptrs = w_ptr + tap * C * C + offs_i[:, None] * C + offs_o[None, :]
        wt = tl.load(w_ptrs, mask=i_ok[:, None] & o_ok[None, :], other=0.0)
        acc = tl.dot(a, wt, acc)

    so = tl.load(scale_out_ptr + b * C + offs_o, mask=o_ok, other=0.0)
    mc = tl.load(mask_b + ph * stride_mh + pw * stride_mw, mask=p_ok, other=0.0).to(tl.float32)
    tile_ok = p_ok[:, None] & o_ok[None, :]
    r_ptrs = res_ptr + b * stride_rb + (ph * stride_rh + pw * stride_rw)[:, None] + offs_o[None, :] * stride_rc
    r = tl.load(r_ptrs, mask=tile_ok, other=0.0).to(tl.float32)
    y = mc[:, None] * (acc * so[None, :]) + (1.0 - mc[:, None]) * r
    o_ptrs = out_ptr + b * stride_ob + (ph * stride_oh + pw * stride_ow)[:, None] + offs_o[None, :] * stride_oc
    tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=tile_ok)


def _triton_configs(configs: tuple[tuple[int, int, int, int, int], ...]) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_P": p, "BLOCK_O": o, "BLOCK_I": i}, num_warps=w, num_stages=s)
        for p, o, i, w, s in configs
    ]


_tuned = triton.autotune(configs=_triton_configs(CONFIGS), key=AUTOTUNE_KEY)(conv3x3_scale_blend_kernel)


def pack_weight_forward(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (9, C_in, C_out) contiguous in `dtype`: Wp[k, i, o] = W[o, i, k]."""
    c_out, c_in = weight.shape[:2]
    return weight.detach().to(dtype).permute(2, 3, 1, 0).reshape(9, c_in, c_out).contiguous()


def pack_weight_transposed(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Weights of the transposed convolution: Wp[k, o, i] = W[o, i, 8 - k] (taps mirrored)."""
    c_out, c_in = weight.shape[:2]
    return weight.detach().to(dtype).flip(2, 3).permute(2, 3, 0, 1).reshape(9, c_out, c_in).contiguous()


def dense(t: torch.Tensor) -> torch.Tensor:
    """t itself when NCHW- or channels_last-contiguous, else a contiguous copy (e.g. expanded grads)."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    return t.contiguous()


def check_int32_extent(t: torch.Tensor, name: str) -> None:
    """In-sample offsets are int32 (the batch offset is int64): one sample must span < 2^31 elements."""
    extent = sum((n - 1) * abs(s) for n, s in zip(t.shape[1:], t.stride()[1:], strict=True))
    if extent >= 2**31:
        raise ValueError(
            f"masked_modconv2d: one sample of {name} spans {extent} elements, more than int32 offsets allow"
        )


def conv3x3_scale_blend(
    inp: torch.Tensor,
    wpack: torch.Tensor,
    scale_in: torch.Tensor,
    scale_out: torch.Tensor,
    mask: torch.Tensor,
    res: torch.Tensor,
    *,
    config: tuple[int, int, int, int, int] | None = None,
) -> torch.Tensor:
    """Launch the kernel; the result has inp's dtype and memory format.

    config: (BLOCK_P, BLOCK_O, BLOCK_I, num_warps, num_stages) to bypass autotuning (tests);
    without it the interpreter uses INTERPRETER_CONFIG and a GPU autotunes over CONFIGS.
    """
    b, c, h, w = inp.shape
    if wpack.shape != (9, c, c) or wpack.dtype != inp.dtype or not wpack.is_contiguous():
        raise ValueError(f"conv3x3_scale_blend: wpack must be contiguous (9, {c}, {c}) {inp.dtype}")
    for name, t in (("scale_in", scale_in), ("scale_out", scale_out)):
        if t.shape != (b, c) or t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError(f"conv3x3_scale_blend: {name} must be contiguous fp32 ({b}, {c})")
    for name, t in (("inp", inp), ("mask", mask), ("res", res)):
        check_int32_extent(t, name)
    if b > 65535:
        raise ValueError(f"masked_modconv2d: batch {b} exceeds the launch grid's 65535 samples")
    out = torch.empty_like(inp)
    args = (
        inp,
        wpack,
        scale_in,
        scale_out,
        mask,
        res,
        out,
        c,
        h,
        w,
        *inp.stride(),
        mask.stride(0),
        mask.stride(2),
        mask.stride(3),
        *res.stride(),
        *out.stride(),
    )
    if interpreter_enabled() or config is not None:
        bp, bo, bi, nw, ns = config if config is not None else INTERPRETER_CONFIG
        grid = (triton.cdiv(h * w, bp) * triton.cdiv(c, bo), b)
        conv3x3_scale_blend_kernel[grid](*args, BLOCK_P=bp, BLOCK_O=bo, BLOCK_I=bi, num_warps=nw, num_stages=ns)
        return out

    def grid(meta):
        return (triton.cdiv(h * w, meta["BLOCK_P"]) * triton.cdiv(c, meta["BLOCK_O"]), b)

    _tuned[grid](*args)
    return out
