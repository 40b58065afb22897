"""Triton kernels of the masked modulated convolution's weight and style gradients (launcher:
giftnet.kernels.masked_modconv.launch_grads).

With g = dy * m, xm = x * m and the per-sample tap correlation

    G[b, k, o, i] = sum_p g[b, o, p] * xm[b, i, p + off(k)]            (zero padding)

the gradients of y = m d u + (1 - m) x, u = conv3x3(x m s, W), are (W[o, i, k], d = 1 and t = 0
without demodulation)

    dW[o, i, k]  = sum_b d[b, o] s[b, i] G[b, k, o, i]  -  W[o, i, k] sum_b t[b, o] s[b, i]^2
    dstyle[b, i] = sum_{o, k} d[b, o] W[o, i, k] G[b, k, o, i]  -  s[b, i] sum_o t[b, o] sum_k W[o, i, k]^2
    t[b, o]      = d[b, o]^3 sum_{i, k} W[o, i, k] s[b, i] G[b, k, o, i]

G is never stored. `weight_style_partials_kernel`: a program owns one tap, a (BLOCK_O x BLOCK_I)
channel tile and a slot (a group of samples and a band of image rows). For each of its samples
it accumulates that sample's G tile over the band in registers (an implicit GEMM over pixels,
(C_out x P) @ (P x C_in), fp32 accumulation), then folds it at once into: its running dW tile
(sum over its samples of d s G), the per-(sample, tap, i-tile) partial of sum_i W s G (for t)
and the per-(sample, tap, o-tile) partial of sum_o d W G (dstyle's first term). Every program
writes its own slots of three small fp32 buffers: dW partials (slots, 9, C, C), and two of
(B, bands, 9, tiles, C). `weight_style_finalize_kernel` reduces them in a fixed order and
applies the demodulation terms, writing dW and dstyle in their own dtypes: deterministic, no
atomics, two launches.

Background skip (exact): a pixel step adds nothing when the mask is 0 over its tile (g = 0) or
over its copy shifted by the tap (xm = 0), so such a step loads nothing and runs no tl.dot.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def weight_style_partials_kernel(
    dy_ptr,  # (B, C, H, W) upstream gradient, any strides
    x_ptr,  # (B, C, H, W) input, any strides, dtype of dy
    mask_ptr,  # (B, 1, H, W) mask in [0, 1], dtype of dy
    w_ptr,  # (C, C, 3, 3) weights, fp32 contiguous
    s_ptr,  # (B, C) style, fp32 contiguous
    d_ptr,  # (B, C) demodulation (ones without), fp32 contiguous
    dw_part_ptr,  # (slots, 9, C, C) fp32: sum over the slot's samples of d s G
    t_part_ptr,  # (B, bands, 9, t_tiles, C) fp32: sum over an i-tile of W s G (read only when DEMOD)
    ds_part_ptr,  # (B, bands, 9, s_tiles, C) fp32: sum over an o-tile of d W G
    B,  # batch
    C,  # channels (in = out)
    H,  # height
    W,  # width
    size_bucket,  # log4 of H * W: an autotune key only (not read)
    band_rows,  # rows per band (a multiple of BLOCK_H)
    n_bands,  # bands per sample
    group,  # samples per slot
    t_tiles,  # i-tiles allocated per (sample, band, tap) in t_part (>= cdiv(C, BLOCK_I))
    s_tiles,  # o-tiles allocated per (sample, band, tap) in ds_part (>= cdiv(C, BLOCK_O))
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
    DEMOD: tl.constexpr,  # write the t partials
    BLOCK_O: tl.constexpr,  # output channels per program (rows of G)
    BLOCK_I: tl.constexpr,  # input channels per program (columns of G)
    BLOCK_H: tl.constexpr,  # tile rows per reduction step
    BLOCK_W: tl.constexpr,  # tile columns per reduction step
):
    pid = tl.program_id(0)
    n_o = (C + BLOCK_O - 1) // BLOCK_O
    n_i = (C + BLOCK_I - 1) // BLOCK_I
    pid_o = pid % n_o
    pid_i = (pid // n_o) % n_i
    tap = pid // (n_o * n_i)
    slot = tl.program_id(1)
    band = slot % n_bands
    b_start = (slot // n_bands) * group
    n_b = tl.minimum(b_start + group, B) - b_start

    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    o_ok = offs_o < C
    i_ok = offs_i < C
    tile_ok = o_ok[:, None] & i_ok[None, :]
    n_tw = (W + BLOCK_W - 1) // BLOCK_W
    t_start = band * (band_rows // BLOCK_H) * n_tw
    t_end = tl.minimum(t_start + (band_rows // BLOCK_H) * n_tw, ((H + BLOCK_H - 1) // BLOCK_H) * n_tw)
    # The weight tile is held as values across the sample loop (not as a tile of pointers).
    wt = tl.load(w_ptr + (offs_o[:, None] * C + offs_i[None, :]) * 9 + tap, mask=tile_ok, other=0.0)

    dw_acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    for j in range(n_b):
        b = (b_start + j).to(tl.int64)
        g_tile = _band_correlation(
            dy_ptr + b * stride_db, x_ptr + b * stride_xb, mask_ptr + b * stride_mb, offs_o, offs_i, o_ok, i_ok,
            tap, t_start, t_end, n_tw, H, W, stride_dc, stride_dh, stride_dw, stride_xc, stride_xh, stride_xw,
            stride_mh, stride_mw, BLOCK_O, BLOCK_I, BLOCK_H, BLOCK_W,
        )  # fmt: skip
        dv = tl.load(d_ptr + b * C + offs_o, mask=o_ok, other=0.0)
        sv = tl.load(s_ptr + b * C + offs_i, mask=i_ok, other=0.0)
        dw_acc += g_tile * (dv[:, None] * sv[None, :])
        wg = wt * g_tile
        row = (b * n_bands + band) * 9 + tap
        tl.store(ds_part_ptr + (row * s_tiles + pid_o) * C + offs_i, tl.sum(wg * dv[:, None], axis=0), mask=i_ok)
        if DEMOD:
            tl.store(t_part_ptr + (row * t_tiles + pid_i) * C + offs_o, tl.sum(wg * sv[None, :], axis=1), mask=o_ok)

    out_ptrs = dw_part_ptr + ((slot.to(tl.int64) * 9 + tap) * C + offs_o[:, None]) * C + offs_i[None, :]
    tl.store(out_ptrs, dw_acc, mask=tile_ok)


@triton.jit
def _band_correlation(
    dy_b, x_b, mask_b, offs_o, offs_i, o_ok, i_ok, tap, t_start, t_end, n_tw, H, W,
    stride_dc, stride_dh, stride_dw, stride_xc, stride_xh, stride_xw, stride_mh, stride_mw,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """One sample's G[tap] tile over the pixel tiles [t_start, t_end) of its band, fp32."""
    dh = tap // 3 - 1
    dw = tap % 3 - 1
    offs_t = tl.arange(0, BLOCK_H * BLOCK_W)
    dot_dtype = x_b.dtype.element_ty
    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    for t in range(t_start, t_end):
        ph = (t // n_tw) * BLOCK_H + offs_t // BLOCK_W
        pw = (t % n_tw) * BLOCK_W + offs_t % BLOCK_W
        p_ok = (ph < H) & (pw < W)
        m = tl.load(mask_b + ph * stride_mh + pw * stride_mw, mask=p_ok, other=0.0).to(tl.float32)
        hh = ph + dh
        ww = pw + dw
        in_img = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        ms = tl.load(mask_b + hh * stride_mh + ww * stride_mw, mask=in_img, other=0.0).to(tl.float32)
        # Background skip: g = dy m is 0 where m is, xm = x m where the shifted mask is: a step
        # whose tile or shifted tile is all background adds exactly nothing.
        live = tl.max((m != 0.0).to(tl.int32), axis=0) * tl.max((ms != 0.0).to(tl.int32), axis=0)
        if live > 0:
            g_ptrs = dy_b + offs_o[:, None] * stride_dc + (ph * stride_dh + pw * stride_dw)[None, :]
            g = tl.load(g_ptrs, mask=o_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
            g = (g * m[None, :]).to(dot_dtype)
            xs_ptrs = x_b + (hh * stride_xh + ww * stride_xw)[:, None] + offs_i[None, :] * stride_xc
            xs = tl.load(xs_ptrs, mask=in_img[:, None] & i_ok[None, :], other=0.0).to(tl.float32)
            xs = (xs * ms[:, None]).to(dot_dtype)
            acc = tl.dot(g, xs, acc)
    return acc


@triton.jit
def _t_rows(t_part_ptr, d_ptr, b, offs_o, o_ok, C, n_bands, n_i, t_tiles, BLOCK_O: tl.constexpr):
    """t[b, offs_o] = d^3 * (the t partials of sample b, int64, summed over bands, taps and i-tiles), fp32."""
    acc = tl.zeros((BLOCK_O,), dtype=tl.float32)
    base = t_part_ptr + b * n_bands * 9 * t_tiles * C + offs_o
    for r in range(n_bands * 9):
        for j in range(n_i):
            acc += tl.load(base + (r * t_tiles + j) * C, mask=o_ok, other=0.0)
    dv = tl.load(d_ptr + b * C + offs_o, mask=o_ok, other=0.0)
    return acc * dv * dv * dv


@triton.jit
def weight_style_finalize_kernel(
    w_ptr,  # (C, C, 3, 3) weights, fp32 contiguous
    s_ptr,  # (B, C) style, fp32 contiguous
    d_ptr,  # (B, C) demodulation, fp32 contiguous
    dw_part_ptr,  # (slots, 9, C, C) fp32
    t_part_ptr,  # (B, bands, 9, t_tiles, C) fp32
    ds_part_ptr,  # (B, bands, 9, s_tiles, C) fp32
    dw_ptr,  # (C, C, 3, 3) out: dW, contiguous, the weight's dtype
    ds_ptr,  # (B, C) out: dstyle, contiguous, the style's dtype
    B,
    C,
    n_slots,
    n_bands,
    n_o,  # o-tiles the partials kernel ran (ds partials to read)
    n_i,  # i-tiles the partials kernel ran (t partials to read)
    t_tiles,
    s_tiles,
    DEMOD: tl.constexpr,
    BLOCK_O: tl.constexpr,  # output channels per dW tile (and per step of dstyle's t term)
    BLOCK_I: tl.constexpr,  # input channels per dW or dstyle tile
):
    """Programs [0, f_o * f_i): one (BLOCK_O x BLOCK_I) tile of dW, all 9 taps; the rest: one
    sample's BLOCK_I entries of dstyle. Sums in a fixed order (slots, bands, taps, tiles)."""
    pid = tl.program_id(0)
    zero64 = pid.to(tl.int64) * 0  # loop starts: int64 sample and slot indices
    f_o = (C + BLOCK_O - 1) // BLOCK_O
    f_i = (C + BLOCK_I - 1) // BLOCK_I
    arange_o = tl.arange(0, BLOCK_O)
    if pid < f_o * f_i:
        offs_o = (pid % f_o) * BLOCK_O + arange_o
        offs_i = (pid // f_o) * BLOCK_I + tl.arange(0, BLOCK_I)
        o_ok = offs_o < C
        i_ok = offs_i < C
        tile_ok = o_ok[:, None] & i_ok[None, :]
        oi = offs_o[:, None] * C + offs_i[None, :]
        u = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)  # sum_b t[b, o] s[b, i]^2
        if DEMOD:
            for b in range(zero64, B):
                t = _t_rows(t_part_ptr, d_ptr, b, offs_o, o_ok, C, n_bands, n_i, t_tiles, BLOCK_O)
                sv = tl.load(s_ptr + b * C + offs_i, mask=i_ok, other=0.0)
                u += t[:, None] * (sv * sv)[None, :]
        for k in tl.static_range(9):
            acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
            for sl in range(zero64, n_slots):
                acc += tl.load(dw_part_ptr + (sl * 9 + k) * C * C + oi, mask=tile_ok, other=0.0)
            if DEMOD:
                acc -= tl.load(w_ptr + oi * 9 + k, mask=tile_ok, other=0.0) * u
            tl.store(dw_ptr + oi * 9 + k, acc, mask=tile_ok)
    else:
        rest = pid - f_o * f_i
        b = (rest // f_i).to(tl.int64)
        offs_i = (rest % f_i) * BLOCK_I + tl.arange(0, BLOCK_I)
        i_ok = offs_i < C
        ds = tl.zeros((BLOCK_I,), dtype=tl.float32)
        base = ds_part_ptr + b * n_bands * 9 * s_tiles * C + offs_i
        for r in range(n_bands * 9):
            for j in range(n_o):
                ds += tl.load(base + (r * s_tiles + j) * C, mask=i_ok, other=0.0)
        if DEMOD:
            tw2 = tl.zeros((BLOCK_I,), dtype=tl.float32)  # sum_o t[b, o] sum_k W[o, i, k]^2
            for jo in range(f_o):
                offs_o = jo * BLOCK_O + arange_o
                o_ok = offs_o < C
                tile_ok = o_ok[:, None] & i_ok[None, :]
                w_ptrs = w_ptr + (offs_o[:, None] * C + offs_i[None, :]) * 9
                w2 = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
                for k in tl.static_range(9):
                    wk = tl.load(w_ptrs + k, mask=tile_ok, other=0.0)
                    w2 += wk * wk
                t = _t_rows(t_part_ptr, d_ptr, b, offs_o, o_ok, C, n_bands, n_i, t_tiles, BLOCK_O)
                tw2 += tl.sum(t[:, None] * w2, axis=0)
            ds -= tl.load(s_ptr + b * C + offs_i, mask=i_ok, other=0.0) * tw2
        tl.store(ds_ptr + b * C + offs_i, ds, mask=i_ok)
