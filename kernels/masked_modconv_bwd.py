"""Weight and style gradients of the masked modulated convolution.

With g = dy * m, xm = x * m and the per-sample tap correlation

    G[b, k, o, i] = sum_p g[b, o, p] * xm[b, i, p + off(k)]            (zero padding)

every remaining gradient is small torch math on G (see `weight_style_grads`). G is an
implicit GEMM over pixels, (C_out x P) @ (P x C_in) per sample and tap; a program owns one
sample, one chunk of pixels, one tap and a (BLOCK_O x BLOCK_I) tile and writes its own slot of
a partial buffer (n_chunks, B, 9, C, C) in fp32 that torch sums over chunks: deterministic,
no atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._dispatch import interpreter_enabled
from kernels.masked_modconv_fwd import check_int32_extent

# (BLOCK_O, BLOCK_I, BLOCK_P, num_warps, num_stages); BLOCK_P is the reduction step. Each one
# compiles without spills for sm_86 and sm_90 with Triton 3.6 and 3.9 in every dtype and layout
# (tests/test_aot_masked_modconv.py), also when specialized on 16-divisible shapes as at the
# GiftNet sites; 32x32x64, 64x32x32 and 64x64x32 tiles with 4 warps spill in fp32 there.
CONFIGS = (
    (32, 32, 128, 8, 2),
    (64, 64, 32, 8, 3),
    (128, 64, 32, 8, 3),
)
INTERPRETER_CONFIG = (64, 64, 128, 4, 1)  # large tiles run fastest under TRITON_INTERPRET=1
AUTOTUNE_KEY = ["C", "H", "W", "stride_xc"]
# A chunk spans a multiple of this many pixels (>= every BLOCK_P) and at least MIN_CHUNK_PIXELS.
CHUNK_ALIGN = 256
MIN_CHUNK_PIXELS = 1024
MAX_PARTIAL_BYTES = 256 << 20


@triton.jit
def tap_correlation_kernel(
    dy_ptr,  # (B, C, H, W) upstream gradient, any strides
    x_ptr,  # (B, C, H, W) forward input, any strides
    mask_ptr,  # (B, 1, H, W) mask, dtype of x
    part_ptr,  # (n_chunks, B, 9, C, C) fp32 contiguous partial G[chunk, b, k, o, i]
    B,  # batch
    C,  # channels
    H,  # height
    W,  # width
    chunk_pixels,  # pixels per chunk (multiple of BLOCK_P)
    stride_db,  # dy strides (elements)
    stride_dc,
    stride_dh,
    stride_dw,
    stride_xb,  # x strides
    stride_xc,
    stride_xh,
    stride_xw,
    stride_mb,  # mask strides
    stride_mh,
    stride_mw,
    BLOCK_O: tl.constexpr,  # output channels per program (rows of G)
    BLOCK_I: tl.constexpr,  # input channels per program (columns of G)
    BLOCK_P: tl.constexpr,  # pixels per reduction step
):
    pid = tl.program_id(0)
    n_o = (C + BLOCK_O - 1) // BLOCK_O
    n_i = (C + BLOCK_I - 1) // BLOCK_I
    pid_o = pid % n_o
    pid_i = (pid // n_o) % n_i
    tap = pid // (n_o * n_i)
    chunk = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    dh = tap // 3 - 1
    dw = tap % 3 - 1

    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    o_ok = offs_o < C
    i_ok = offs_i < C
    dy_b = dy_ptr + b * stride_db
    x_b = x_ptr + b * stride_xb
    mask_b = mask_ptr + b * stride_mb
    dot_dtype = x_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    p_start = chunk * chunk_pixels
    p_end = tl.minimum(p_start + chunk_pixels, H * W)
    for p0 in range(p_start, p_end, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < p_end
        ph = offs_p // W
        pw = offs_p % W
        m = tl.load(mask_b + ph * stride_mh + pw * stride_mw, mask=p_ok, other=0.0).to(tl.float32)
        g_ptrs = dy_b + offs_o[:, None] * stride_dc + (ph * stride_dh + pw * stride_dw)[None, :]
        g = tl.load(g_ptrs, mask=o_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
        g = (g * m[None, :]).to(dot_dtype)
        hh = ph + dh
        ww = pw + dw
        in_img = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        ms = tl.load(mask_b + hh * stride_mh + ww * stride_mw, mask=in_img, other=0.0).to(tl.float32)
        xs_ptrs = x_b + (hh * stride_xh + ww * stride_xw)[:, None] + offs_i[None, :] * stride_xc
        xs = tl.load(xs_ptrs, mask=in_img[:, None] & i_ok[None, :], other=0.0).to(tl.float32)
        xs = (xs * ms[:, None]).to(dot_dtype)
        acc = tl.dot(g, xs, acc)

    slot = ((chunk * B + b) * 9 + tap) * C * C
    out_ptrs = part_ptr + slot + offs_o[:, None] * C + offs_i[None, :]
    tl.store(out_ptrs, acc, mask=o_ok[:, None] & i_ok[None, :])


def _triton_configs(configs: tuple[tuple[int, int, int, int, int], ...]) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_O": o, "BLOCK_I": i, "BLOCK_P": p}, num_warps=w, num_stages=s)
        for o, i, p, w, s in configs
    ]


_tuned = triton.autotune(configs=_triton_configs(CONFIGS), key=AUTOTUNE_KEY)(tap_correlation_kernel)


def choose_chunks(batch: int, channels: int, pixels: int, num_sms: int) -> int:
    """Pixel chunks per sample: enough programs to fill the GPU, bounded partial-buffer memory."""
    programs_per_chunk = batch * 9 * triton.cdiv(channels, 64) ** 2
    want = triton.cdiv(4 * num_sms, programs_per_chunk)
    by_pixels = max(1, pixels // MIN_CHUNK_PIXELS)
    by_memory = max(1, MAX_PARTIAL_BYTES // (batch * 9 * channels * channels * 4))
    return max(1, min(want, by_pixels, by_memory))


def tap_correlation(
    dy: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    chunks: int | None = None,
    config: tuple[int, int, int, int, int] | None = None,
) -> torch.Tensor:
    """G[b, k, o, i] = sum_p (dy m)[b, o, p] (x m)[b, i, p + off(k)] in fp32, shape (B, 9, C, C).

    chunks: pixel chunks per sample (default: `choose_chunks`); config: (BLOCK_O, BLOCK_I,
    BLOCK_P, num_warps, num_stages) to bypass autotuning.
    """
    b, c, h, w = x.shape
    if dy.dtype != x.dtype:
        raise ValueError(f"tap_correlation: dy is {dy.dtype} but x is {x.dtype}")
    for name, t in (("dy", dy), ("x", x), ("mask", mask)):
        check_int32_extent(t, name)
    if chunks is None:
        sms = 4 if interpreter_enabled() else torch.cuda.get_device_properties(x.device).multi_processor_count
        chunks = choose_chunks(b, c, h * w, sms)
    chunk_pixels = triton.cdiv(triton.cdiv(h * w, chunks), CHUNK_ALIGN) * CHUNK_ALIGN
    chunks = triton.cdiv(h * w, chunk_pixels)
    if chunks > 65535 or b > 65535:
        raise ValueError(f"tap_correlation: grid too large ({chunks} chunks, batch {b})")
    part = torch.empty((chunks, b, 9, c, c), device=x.device, dtype=torch.float32)
    args = (
        dy,
        x,
        mask,
        part,
        b,
        c,
        h,
        w,
        chunk_pixels,
        *dy.stride(),
        *x.stride(),
        mask.stride(0),
        mask.stride(2),
        mask.stride(3),
    )
    if interpreter_enabled() or config is not None:
        bo, bi, bp, nw, ns = config if config is not None else INTERPRETER_CONFIG
        grid = (9 * triton.cdiv(c, bo) * triton.cdiv(c, bi), chunks, b)
        tap_correlation_kernel[grid](*args, BLOCK_O=bo, BLOCK_I=bi, BLOCK_P=bp, num_warps=nw, num_stages=ns)
    else:

        def grid(meta):
            return (9 * triton.cdiv(c, meta["BLOCK_O"]) * triton.cdiv(c, meta["BLOCK_I"]), chunks, b)

        _tuned[grid](*args)
    return part[0] if chunks == 1 else part.sum(0)


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
