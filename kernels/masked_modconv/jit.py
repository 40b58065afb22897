"""Triton kernel of the masked modulated convolution: the implicit-GEMM conv (forward and dx).
Launcher: giftnet.kernels.masked_modconv.launch. The weight and style gradients: jit_grads.py.

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
