"""Triton kernels of the relation map and the relation-distillation loss (paper eq. 3).

A feature map is read as (B, C, N) with N = H*W pixels: element (b, c, p) lives at
b*stride_b + c*stride_c + p*stride_p, which covers NCHW (stride_p = 1) and channels_last
(stride_c = 1) alike. Every program of a (B, P) grid owns one sample and one contiguous chunk
of `chunk` pixels, so a batch of 16 still spreads over the whole GPU; per-sample results
come out as per-program partials that the launcher combines in a fixed order (deterministic,
no atomics). Offsets are int64, accumulation fp32. The launchers live in giftnet.kernels.relation.launch.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Start value of running maxima: finite, so exp(NEG - NEG) never makes a NaN.
NEG = tl.constexpr(-3.0e38)


@triton.jit
def _channel_sum_kernel(
    x_ptr,  # (B, C, N) features, fp32/fp16/bf16, strides below
    w_ptr,  # (B, N) fp32 per-pixel weights, contiguous
    center_ptr,  # (B, C) fp32, subtracted from the features before weighting
    out_ptr,  # (B, P, C) fp32 partials: out[b, p, c] = sum_{i in chunk p} w[b, i] * (x[b, c, i] - center[b, c])
    wsum_ptr,  # (B, P) fp32 partials: sum_{i in chunk p} w[b, i]
    stride_xb,  # elements between samples of x
    stride_xc,  # elements between channels of x
    stride_xp,  # elements between pixels of x
    C,  # channels
    N,  # pixels per sample
    chunk,  # pixels per program
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Weighted, centred channel sums over one pixel chunk, and the sum of the weights: the
    masked foreground sum and area (w = mask, center = 0), and the gradient through the
    foreground mean (w = dz, center = f)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_p = tl.program_id(1)
    p_start = pid_p * chunk
    p_end = tl.minimum(p_start + chunk, N)
    offs_c0 = tl.arange(0, BLOCK_C)
    offs_n0 = tl.arange(0, BLOCK_N)
    out_row = out_ptr + (pid_b * tl.num_programs(1) + pid_p) * C
    tile = offs_c0[:, None] * stride_xc + offs_n0[None, :] * stride_xp  # int32 within a tile
    # Triton turns the loop counters `c0 = 0` into tensors (jit and interpreter alike); a type checker
    # sees an int, hence the ignores on `c0.to(...)` in this file.
    c0 = 0
    while c0 < C:
        offs_c = c0 + offs_c0
        c_ok = offs_c < C
        center = tl.load(center_ptr + pid_b * C + offs_c, mask=c_ok, other=0.0)
        x_c = x_ptr + pid_b * stride_xb + c0.to(tl.int64) * stride_xc  # type: ignore[attr-defined]
        acc = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
        n0 = p_start
        while n0 < p_end:
            offs_n = n0 + offs_n0
            n_ok = offs_n < p_end
            w = tl.load(w_ptr + pid_b * N + offs_n, mask=n_ok, other=0.0)
            x_tile = x_c + n0.to(tl.int64) * stride_xp
            x = tl.load(x_tile + tile, mask=c_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
            acc += (x - center[:, None]) * w[None, :]
            n0 += BLOCK_N
        tl.store(out_row + offs_c, tl.sum(acc, axis=1), mask=c_ok)
        c0 += BLOCK_C
    w_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    n0 = p_start
    while n0 < p_end:
        offs_n = n0 + offs_n0
        w_acc += tl.load(w_ptr + pid_b * N + offs_n, mask=offs_n < p_end, other=0.0)
        n0 += BLOCK_N
    tl.store(wsum_ptr + pid_b * tl.num_programs(1) + pid_p, tl.sum(w_acc, axis=0))


@triton.jit
def _mean_kernel(
    part_ptr,  # (T, B, P, C) fp32 per-program masked channel sums of T feature maps
    wsum_ptr,  # (B, P) fp32 per-program mask sums
    f_ptr,  # (T, B, C) fp32 out: masked mean feature f of each map and sample
    inv_area_ptr,  # (B,) fp32 out: 1 / max(mask sum, area_eps)
    B,  # samples
    P,  # programs per sample that made the partials
    C,  # channels
    area_eps,  # fp32 floor of the mask area (an empty mask gives f = 0)
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Combine the per-program partials of one (map, sample) into f, in a fixed order."""
    pid = tl.program_id(0).to(tl.int64)  # map * B + sample
    b = pid % B
    offs_p = tl.arange(0, BLOCK_P)
    offs_c0 = tl.arange(0, BLOCK_C)
    area = tl.zeros([BLOCK_P], dtype=tl.float32)
    p0 = 0
    while p0 < P:
        area += tl.load(wsum_ptr + b * P + p0 + offs_p, mask=p0 + offs_p < P, other=0.0)
        p0 += BLOCK_P
    inv_area = 1.0 / tl.maximum(tl.sum(area, axis=0), area_eps)
    tl.store(inv_area_ptr + b, inv_area)  # the same value from every map's program
    c0 = 0
    while c0 < C:
        offs_c = c0 + offs_c0
        c_ok = offs_c < C
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        p0 = 0
        while p0 < P:
            rows = pid * P + p0 + offs_p
            ok = (p0 + offs_p < P)[:, None] & c_ok[None, :]
            acc += tl.load(part_ptr + rows[:, None] * C + offs_c[None, :], mask=ok, other=0.0)
            p0 += BLOCK_P
        tl.store(f_ptr + pid * C + offs_c, tl.sum(acc, axis=0) * inv_area, mask=c_ok)
        c0 += BLOCK_C


@triton.jit
def _logits_kernel(
    x_ptr,  # (B, C, N) features, fp32/fp16/bf16, strides below
    f_ptr,  # (B, C) fp32 masked mean foreground feature
    z_ptr,  # (B, N) fp32 out: logits z = -gamma * ||f - x_i||^2
    max_ptr,  # (B, P) fp32 out: max of z over the program's chunk
    sum_ptr,  # (B, P) fp32 out: sum over the chunk of exp(z - max)
    stride_xb,  # elements between samples of x
    stride_xc,  # elements between channels of x
    stride_xp,  # elements between pixels of x
    C,  # channels
    N,  # pixels per sample
    chunk,  # pixels per program
    neg_gamma,  # fp32: -gamma
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Logits of one pixel chunk and their online softmax statistics (max, sum of exp).

    The distance is summed directly as sum_c (x_c - f_c)^2, not expanded into
    ||x||^2 - 2 f.x + ||f||^2: the expansion cancels catastrophically in fp32 when pixels lie
    near f with large magnitudes, exactly the pixels that dominate the softmax.
    """
    pid_b = tl.program_id(0).to(tl.int64)
    pid_p = tl.program_id(1)
    p_start = pid_p * chunk
    p_end = tl.minimum(p_start + chunk, N)
    offs_c0 = tl.arange(0, BLOCK_C)
    offs_n0 = tl.arange(0, BLOCK_N)
    x_base = x_ptr + pid_b * stride_xb
    tile = offs_c0[:, None] * stride_xc + offs_n0[None, :] * stride_xp  # int32 within a tile
    m_run = tl.full([BLOCK_N], NEG, dtype=tl.float32)
    s_run = tl.zeros([BLOCK_N], dtype=tl.float32)
    n0 = p_start
    while n0 < p_end:
        offs_n = n0 + offs_n0
        n_ok = offs_n < p_end
        x_n = x_base + n0.to(tl.int64) * stride_xp
        d2 = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
        c0 = 0
        while c0 < C:
            offs_c = c0 + offs_c0
            c_ok = offs_c < C
            f = tl.load(f_ptr + pid_b * C + offs_c, mask=c_ok, other=0.0)
            x_tile = x_n + c0.to(tl.int64) * stride_xc  # type: ignore[attr-defined]
            x = tl.load(x_tile + tile, mask=c_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
            diff = x - f[:, None]  # zero on padded channels: x and f load as 0 there
            d2 += diff * diff
            c0 += BLOCK_C
        z = neg_gamma * tl.sum(d2, axis=0)
        tl.store(z_ptr + pid_b * N + offs_n, z, mask=n_ok)
        # Per-lane online softmax; lanes past the chunk keep max NEG and sum 0.
        z = tl.where(n_ok, z, NEG)
        m_new = tl.maximum(m_run, z)
        s_run = s_run * tl.exp(m_run - m_new) + tl.where(n_ok, tl.exp(z - m_new), 0.0)
        m_run = m_new
        n0 += BLOCK_N
    m = tl.max(m_run, axis=0)
    s = tl.sum(s_run * tl.exp(m_run - m), axis=0)
    part = pid_b * tl.num_programs(1) + pid_p
    tl.store(max_ptr + part, m)
    tl.store(sum_ptr + part, s)


@triton.jit
def _softmax_norm(
    max_ptr,  # (P,) fp32 per-program maxima of one sample
    sum_ptr,  # (P,) fp32 per-program sums of exp(z - max)
    P,  # programs per sample
    BLOCK_P: tl.constexpr,
):
    """Combine per-program softmax partials into the sample's (max, 1 / sum of exp)."""
    offs = tl.arange(0, BLOCK_P)
    m_vec = tl.full([BLOCK_P], NEG, dtype=tl.float32)
    p0 = 0
    while p0 < P:
        m_vec = tl.maximum(m_vec, tl.load(max_ptr + p0 + offs, mask=p0 + offs < P, other=NEG))
        p0 += BLOCK_P
    m = tl.max(m_vec, axis=0)
    s_vec = tl.zeros([BLOCK_P], dtype=tl.float32)
    p0 = 0
    while p0 < P:
        ok = p0 + offs < P
        mp = tl.load(max_ptr + p0 + offs, mask=ok, other=NEG)
        sp = tl.load(sum_ptr + p0 + offs, mask=ok, other=0.0)
        s_vec += sp * tl.exp(mp - m)
        p0 += BLOCK_P
    return m, 1.0 / tl.sum(s_vec, axis=0)


@triton.jit
def _grad_kernel(
    x_ptr,  # (B, C, N) features, fp32/fp16/bf16, strides below
    dz_ptr,  # (B, N) fp32 gradient of the loss w.r.t. the logits z (per unit upstream gradient); R_s with FROM_TERMS
    m_ptr,  # (B, N) fp32 mask
    inv_area_ptr,  # (B,) fp32 1 / clamped foreground area
    f_ptr,  # (B, C) fp32 masked mean foreground feature
    g_ptr,  # (B, C) fp32 sum_i dz_i (x_i - f)
    up_ptr,  # (1,) fp32 upstream gradient (a scalar)
    a_ptr,  # (B, N) fp32 (FROM_TERMS): a = 2 (R_s - R_t)
    q_ptr,  # (B,) fp32 (FROM_TERMS): q = sum_i R_s a
    grad_ptr,  # (B, C, N) out, dtype of x, strides below
    stride_xb,  # elements between samples of x
    stride_xc,  # elements between channels of x
    stride_xp,  # elements between pixels of x
    stride_gb,  # elements between samples of grad
    stride_gc,  # elements between channels of grad
    stride_gp,  # elements between pixels of grad
    C,  # channels
    N,  # pixels per sample
    chunk,  # pixels per program
    two_gamma,  # fp32: 2 * gamma, divided by B for the batch-mean loss
    FROM_TERMS: tl.constexpr,  # dz = R_s (a - q), formed here (the loss), else read (the map)
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dL/dx_j = 2 gamma s ((m_j / A) g - dz_j (x_j - f)), s the upstream gradient: the second
    term is the path through x_j's own logit, the first the path through the foreground mean f."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_p = tl.program_id(1)
    p_start = pid_p * chunk
    p_end = tl.minimum(p_start + chunk, N)
    offs_c0 = tl.arange(0, BLOCK_C)
    offs_n0 = tl.arange(0, BLOCK_N)
    coef = two_gamma * tl.load(up_ptr)
    inv_area = tl.load(inv_area_ptr + pid_b)
    x_tile0 = offs_c0[:, None] * stride_xc + offs_n0[None, :] * stride_xp  # int32 within a tile
    g_tile0 = offs_c0[:, None] * stride_gc + offs_n0[None, :] * stride_gp
    n0 = p_start
    while n0 < p_end:
        offs_n = n0 + offs_n0
        n_ok = offs_n < p_end
        dz = tl.load(dz_ptr + pid_b * N + offs_n, mask=n_ok, other=0.0)
        if FROM_TERMS:
            a = tl.load(a_ptr + pid_b * N + offs_n, mask=n_ok, other=0.0)
            dz = dz * (a - tl.load(q_ptr + pid_b))
        mw = tl.load(m_ptr + pid_b * N + offs_n, mask=n_ok, other=0.0) * inv_area
        x_n = x_ptr + pid_b * stride_xb + n0.to(tl.int64) * stride_xp
        g_n = grad_ptr + pid_b * stride_gb + n0.to(tl.int64) * stride_gp
        c0 = 0
        while c0 < C:
            offs_c = c0 + offs_c0
            c_ok = offs_c < C
            ok = c_ok[:, None] & n_ok[None, :]
            f = tl.load(f_ptr + pid_b * C + offs_c, mask=c_ok, other=0.0)
            g = tl.load(g_ptr + pid_b * C + offs_c, mask=c_ok, other=0.0)
            x = tl.load(x_n + c0.to(tl.int64) * stride_xc + x_tile0, mask=ok, other=0.0).to(tl.float32)  # type: ignore[attr-defined]
            grad = coef * (mw[None, :] * g[:, None] - dz[None, :] * (x - f[:, None]))
            tl.store(g_n + c0.to(tl.int64) * stride_gc + g_tile0, grad.to(grad_ptr.dtype.element_ty), mask=ok)  # type: ignore[attr-defined]
            c0 += BLOCK_C
        n0 += BLOCK_N
