"""Triton kernels of the masked modulated convolution: the implicit-GEMM conv (forward and dx) and
the per-sample tap correlation (weight and style gradients). Launchers: giftnet.kernels.masked_modconv.launch.

One kernel serves the forward pass and the input gradient of the masked modulated convolution:

    out[b, o, p] = m[b, p] * so[b, o] * sum_{k, i} Wp[k, i, o] * (m * si[b, i] * inp[b, i])[p + off(k)]
                   + (1 - m[b, p]) * res[b, o, p]

forward: inp = x,  si = style, so = demodulation d, Wp[k, i, o] = W[o, i, k], res = x
dx:      inp = dy, si = d,     so = style,          Wp[k, o, i] = W[o, i, 8 - k], res = dy

Per-sample weights never exist in memory: the scales are applied to the input tile as it is
loaded and to the accumulator in the epilogue. A program owns one sample, a 2-D tile of
BLOCK_H x BLOCK_W pixels and a tile of BLOCK_O output channels, and loops over the 9 taps
times the input-channel tiles, accumulating in fp32 with tl.dot. Channel counts that are not
multiples of the tile (3, 17, ...) are padded by masked loads.

Background skip (exact): the outer mask factor m[p] makes out = res wherever m = 0, so a
program whose tile is all background (m == 0 at every pixel of the tile; the 3x3 halo does not
matter) copies res and does no convolution: no input, weight or halo loads, no tl.dot. GIFT
changes only the foreground, and on real object masks most 2-D tiles are background.

With g = dy * m, xm = x * m and the per-sample tap correlation

    G[b, k, o, i] = sum_p g[b, o, p] * xm[b, i, p + off(k)]            (zero padding)

every remaining gradient is small torch math on G (see `weight_style_grads`). G is an
implicit GEMM over pixels, (C_out x P) @ (P x C_in) per sample and tap; a program owns one
sample, one chunk of pixels, one tap and a (BLOCK_O x BLOCK_I) tile and writes its own slot of
a partial buffer (n_chunks, B, 9, C, C) in fp32 that torch sums over chunks: deterministic,
no atomics. A chunk is a band of image rows, walked in 2-D BLOCK_H x BLOCK_W tiles; a tile
adds nothing (and is skipped, loads included) when the mask is 0 over it (g = 0) or over its
copy shifted by the tap (xm = 0).
"""

from __future__ import annotations

import triton
import triton.language as tl


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
    size_bucket,  # log4 of H * W: an autotune key only (not read)
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
    BLOCK_H: tl.constexpr,  # tile rows per program
    BLOCK_W: tl.constexpr,  # tile columns per program (BLOCK_H * BLOCK_W >= 16 for tl.dot)
    BLOCK_O: tl.constexpr,  # output channels per program
    BLOCK_I: tl.constexpr,  # input channels per reduction step (>= 16 for tl.dot)
):
    pid = tl.program_id(0)
    n_o = (C + BLOCK_O - 1) // BLOCK_O
    pid_o = pid % n_o
    pid_t = pid // n_o
    n_tw = (W + BLOCK_W - 1) // BLOCK_W
    b = tl.program_id(1).to(tl.int64)

    offs_t = tl.arange(0, BLOCK_H * BLOCK_W)
    ph = (pid_t // n_tw) * BLOCK_H + offs_t // BLOCK_W
    pw = (pid_t % n_tw) * BLOCK_W + offs_t % BLOCK_W
    p_ok = (ph < H) & (pw < W)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = offs_o < C
    tile_ok = p_ok[:, None] & o_ok[None, :]
    mask_b = mask_ptr + b * stride_mb

    mc = tl.load(mask_b + ph * stride_mh + pw * stride_mw, mask=p_ok, other=0.0).to(tl.float32)
    # Background skip: the output (and in the adjoint, dx) at p is m[p] * (...) + (1 - m[p]) res[p],
    # so where the mask is 0 over the whole tile the result is res exactly, whatever the halo holds.
    if tl.max((mc != 0.0).to(tl.int32), axis=0) > 0:
        inp_b = inp_ptr + b * stride_ib
        scale_in_b = scale_in_ptr + b * C
        dot_dtype = w_ptr.dtype.element_ty
        arange_i = tl.arange(0, BLOCK_I)
        acc = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_O), dtype=tl.float32)
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
        # res and its pointers are formed after the loop so that they do not hold registers in it.
        r_ptrs = res_ptr + b * stride_rb + (ph * stride_rh + pw * stride_rw)[:, None] + offs_o[None, :] * stride_rc
        r = tl.load(r_ptrs, mask=tile_ok, other=0.0).to(tl.float32)
        y = mc[:, None] * (acc * so[None, :]) + (1.0 - mc[:, None]) * r
    else:
        r_ptrs = res_ptr + b * stride_rb + (ph * stride_rh + pw * stride_rw)[:, None] + offs_o[None, :] * stride_rc
        y = tl.load(r_ptrs, mask=tile_ok, other=0.0).to(tl.float32)
    o_ptrs = out_ptr + b * stride_ob + (ph * stride_oh + pw * stride_ow)[:, None] + offs_o[None, :] * stride_oc
    tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=tile_ok)


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
    size_bucket,  # log4 of H * W: an autotune key only (not read)
    chunk_rows,  # image rows per chunk (multiple of BLOCK_H)
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
    BLOCK_H: tl.constexpr,  # tile rows per reduction step
    BLOCK_W: tl.constexpr,  # tile columns per reduction step
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
    offs_t = tl.arange(0, BLOCK_H * BLOCK_W)
    dy_b = dy_ptr + b * stride_db
    x_b = x_ptr + b * stride_xb
    mask_b = mask_ptr + b * stride_mb
    dot_dtype = x_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    n_tw = (W + BLOCK_W - 1) // BLOCK_W
    t_start = chunk * (chunk_rows // BLOCK_H) * n_tw
    t_end = tl.minimum(t_start + (chunk_rows // BLOCK_H) * n_tw, ((H + BLOCK_H - 1) // BLOCK_H) * n_tw)
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

    slot = ((chunk * B + b) * 9 + tap) * C * C
    out_ptrs = part_ptr + slot + offs_o[:, None] * C + offs_i[None, :]
    tl.store(out_ptrs, acc, mask=o_ok[:, None] & i_ok[None, :])
