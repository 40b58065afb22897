"""Triton kernels of the relation-distillation loss in five launches (forward four, backward one).

Per sample, with F the student's and T the teacher's features (B, C, N), m the mask:
  1. _pair_sums_kernel    per-program partials of sum_i m_i F_i, sum_i m_i T_i and sum_i m_i
  2. _pair_logits_kernel  f = combined sums / area (every program combines the partials in the
                          same order, so all hold the same bits), z_i = -gamma ||f - x_i||^2 for
                          both maps, per-program online softmax statistics (max, sum of exp)
  3. _pair_terms_kernel   R_s, R_t from z and the combined statistics; per-program partials of
                          the loss sum (R_s - R_t)^2, q = sum R_s a (a = 2 (R_s - R_t)) and, with
                          a gradient to come, u = sum R_s a (F - f) and v = sum R_s (F - f);
                          R_s and a are kept per pixel
  4. _finalize_kernel     loss = sum of the partials; q; g = sum_i dz_i (F_i - f) = u - q v,
                          exact since dz_i = R_s,i (a_i - q) (the differences stay inside u)
  5. giftnet.kernels.relation.jit._grad_kernel with FROM_TERMS: dz = R_s (a - q) on the fly, and
     dF_j = 2 gamma s ((m_j / A) g - dz_j (F_j - f)) / B
Feature passes: student 3 (sums, logits, terms) + 1 in the backward (and the gradient written),
teacher 2. Every tile spans all channels (CP, the next power of 2 of C), so f lives in registers.
Partials are combined in a fixed order: deterministic, no atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl

from giftnet.kernels.relation.jit import NEG, _softmax_norm


@triton.jit
def _tile(x_b, stride_xc, stride_xp, offs_c, c_ok, offs_n, n_ok):
    """One (CP, BLOCK_N) tile of features in fp32 (0 off the channels and the chunk)."""
    ptrs = x_b + offs_c[:, None].to(tl.int64) * stride_xc + offs_n[None, :].to(tl.int64) * stride_xp
    return tl.load(ptrs, mask=c_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def _masked_sums(x_b, stride_xc, stride_xp, m_row, out_row, C, p_start, p_end, CP: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_c = tl.arange(0, CP)
    c_ok = offs_c < C
    acc = tl.zeros([CP, BLOCK_N], dtype=tl.float32)
    for n0 in range(p_start, p_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < p_end
        m = tl.load(m_row + offs_n, mask=n_ok, other=0.0)
        acc += _tile(x_b, stride_xc, stride_xp, offs_c, c_ok, offs_n, n_ok) * m[None, :]
    tl.store(out_row + offs_c, tl.sum(acc, axis=1), mask=c_ok)


@triton.jit
def _pair_sums_kernel(
    s_ptr,  # (B, C, N) student features, strides below
    t_ptr,  # (B, C, N) teacher features
    m_ptr,  # (B, N) fp32 mask, contiguous
    part_ptr,  # (2, B, P, C) fp32 out: per-program masked channel sums of student, teacher
    wsum_ptr,  # (B, P) fp32 out: per-program mask sums
    stride_sb,
    stride_sc,
    stride_sp,
    stride_tb,
    stride_tc,
    stride_tp,
    C,
    N,
    chunk,  # pixels per program
    CP: tl.constexpr,  # channels per tile: next power of 2 of C
    BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    n_prog = tl.num_programs(1)
    p_start = p * chunk
    p_end = tl.minimum(p_start + chunk, N)
    m_row = m_ptr + b * N
    row = b * n_prog + p
    _masked_sums(s_ptr + b * stride_sb, stride_sc, stride_sp, m_row, part_ptr + row * C, C, p_start, p_end, CP, BLOCK_N)
    t_row = part_ptr + (tl.num_programs(0) * n_prog + row) * C
    _masked_sums(t_ptr + b * stride_tb, stride_tc, stride_tp, m_row, t_row, C, p_start, p_end, CP, BLOCK_N)
    w_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for n0 in range(p_start, p_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        w_acc += tl.load(m_row + offs_n, mask=offs_n < p_end, other=0.0)
    tl.store(wsum_ptr + row, tl.sum(w_acc, axis=0))


@triton.jit
def _combine_rows(rows_ptr, P, C, CP: tl.constexpr, BLOCK_P: tl.constexpr):
    """sum over P rows of a (P, C) fp32 array, in a fixed order: a (CP,) vector."""
    offs_c = tl.arange(0, CP)
    offs_p = tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_P, CP], dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        ok = (p0 + offs_p < P)[:, None] & (offs_c < C)[None, :]
        acc += tl.load(rows_ptr + (p0 + offs_p)[:, None] * C + offs_c[None, :], mask=ok, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _logits(x_b, stride_xc, stride_xp, f, z_row, C, p_start, p_end, neg_gamma, CP: tl.constexpr, BLOCK_N: tl.constexpr):
    """Store the chunk's logits, return its softmax statistics (max, sum of exp(z - max))."""
    offs_c = tl.arange(0, CP)
    c_ok = offs_c < C
    m_run = tl.full([BLOCK_N], NEG, dtype=tl.float32)
    s_run = tl.zeros([BLOCK_N], dtype=tl.float32)
    for n0 in range(p_start, p_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < p_end
        diff = _tile(x_b, stride_xc, stride_xp, offs_c, c_ok, offs_n, n_ok) - f[:, None]  # 0 off the channels
        z = neg_gamma * tl.sum(diff * diff, axis=0)  # summed directly: no ||x||^2 - 2 f.x cancellation
        tl.store(z_row + offs_n, z, mask=n_ok)
        z = tl.where(n_ok, z, NEG)
        m_new = tl.maximum(m_run, z)
        s_run = s_run * tl.exp(m_run - m_new) + tl.where(n_ok, tl.exp(z - m_new), 0.0)
        m_run = m_new
    m = tl.max(m_run, axis=0)
    return m, tl.sum(s_run * tl.exp(m_run - m), axis=0)


@triton.jit
def _pair_logits_kernel(
    s_ptr,  # (B, C, N) student features
    t_ptr,  # (B, C, N) teacher features
    part_ptr,  # (2, B, P, C) fp32 masked channel sums (launch 1)
    wsum_ptr,  # (B, P) fp32 mask sums (launch 1)
    f_ptr,  # (2, B, C) fp32 out (program 0 of each sample): foreground means
    inv_area_ptr,  # (B,) fp32 out (program 0): 1 / max(area, area_eps)
    z_ptr,  # (2, B, N) fp32 out: logits
    max_ptr,  # (2, B, P) fp32 out: per-program max of z
    sum_ptr,  # (2, B, P) fp32 out: per-program sum of exp(z - max)
    stride_sb,
    stride_sc,
    stride_sp,
    stride_tb,
    stride_tc,
    stride_tp,
    C,
    N,
    chunk,
    area_eps,
    neg_gamma,
    CP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    B = tl.num_programs(0)
    P = tl.num_programs(1)
    p_start = p * chunk
    p_end = tl.minimum(p_start + chunk, N)
    offs_c = tl.arange(0, CP)
    c_ok = offs_c < C
    offs_p = tl.arange(0, BLOCK_P)
    area = tl.zeros([BLOCK_P], dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        area += tl.load(wsum_ptr + b * P + p0 + offs_p, mask=p0 + offs_p < P, other=0.0)
    inv_area = 1.0 / tl.maximum(tl.sum(area, axis=0), area_eps)
    f_s = _combine_rows(part_ptr + b * P * C, P, C, CP, BLOCK_P) * inv_area
    f_t = _combine_rows(part_ptr + (B + b) * P * C, P, C, CP, BLOCK_P) * inv_area
    if p == 0:
        tl.store(inv_area_ptr + b, inv_area)
        tl.store(f_ptr + b * C + offs_c, f_s, mask=c_ok)
        tl.store(f_ptr + (B + b) * C + offs_c, f_t, mask=c_ok)
    ms, ss = _logits(
        s_ptr + b * stride_sb, stride_sc, stride_sp, f_s, z_ptr + b * N, C, p_start, p_end, neg_gamma, CP, BLOCK_N
    )
    z_t = z_ptr + (B + b) * N
    mt, st = _logits(t_ptr + b * stride_tb, stride_tc, stride_tp, f_t, z_t, C, p_start, p_end, neg_gamma, CP, BLOCK_N)
    tl.store(max_ptr + b * P + p, ms)
    tl.store(sum_ptr + b * P + p, ss)
    tl.store(max_ptr + (B + b) * P + p, mt)
    tl.store(sum_ptr + (B + b) * P + p, st)


@triton.jit
def _pair_terms_kernel(
    s_ptr,  # (B, C, N) student features (read only with GRAD)
    z_ptr,  # (2, B, N) fp32 logits
    max_ptr,  # (2, B, P) fp32 per-program softmax maxima
    sum_ptr,  # (2, B, P) fp32 per-program sums of exp
    f_ptr,  # (2, B, C) fp32 foreground means (the student's first)
    loss_ptr,  # (B, P) fp32 out: sum over the chunk of (R_s - R_t)^2 / B
    q_ptr,  # (B, P) fp32 out: sum over the chunk of R_s a
    u_ptr,  # (B, P, C) fp32 out (GRAD): sum over the chunk of R_s a (F - f)
    v_ptr,  # (B, P, C) fp32 out (GRAD): sum over the chunk of R_s (F - f)
    terms_ptr,  # (2, B, N) fp32 out (GRAD): R_s and a
    stride_sb,
    stride_sc,
    stride_sp,
    C,
    N,
    chunk,
    inv_b,
    GRAD: tl.constexpr,
    CP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    B = tl.num_programs(0)
    P = tl.num_programs(1)
    mx_s, inv_s = _softmax_norm(max_ptr + b * P, sum_ptr + b * P, P, BLOCK_P)
    mx_t, inv_t = _softmax_norm(max_ptr + (B + b) * P, sum_ptr + (B + b) * P, P, BLOCK_P)
    p_start = p * chunk
    p_end = tl.minimum(p_start + chunk, N)
    offs_c = tl.arange(0, CP)
    c_ok = offs_c < C
    f = tl.load(f_ptr + b * C + offs_c, mask=c_ok, other=0.0)
    s_b = s_ptr + b * stride_sb
    loss_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    q_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    u_acc = tl.zeros([CP, BLOCK_N], dtype=tl.float32)
    v_acc = tl.zeros([CP, BLOCK_N], dtype=tl.float32)
    for n0 in range(p_start, p_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < p_end
        zs = tl.load(z_ptr + b * N + offs_n, mask=n_ok, other=NEG)
        zt = tl.load(z_ptr + (B + b) * N + offs_n, mask=n_ok, other=NEG)
        rs = tl.where(n_ok, tl.exp(zs - mx_s) * inv_s, 0.0)
        rt = tl.where(n_ok, tl.exp(zt - mx_t) * inv_t, 0.0)
        a = 2.0 * (rs - rt)
        loss_acc += (rs - rt) * (rs - rt)
        q_acc += rs * a
        if GRAD:
            tl.store(terms_ptr + b * N + offs_n, rs, mask=n_ok)
            tl.store(terms_ptr + (B + b) * N + offs_n, a, mask=n_ok)
            diff = _tile(s_b, stride_sc, stride_sp, offs_c, c_ok, offs_n, n_ok) - f[:, None]
            u_acc += diff * (rs * a)[None, :]
            v_acc += diff * rs[None, :]
    row = b * P + p
    tl.store(loss_ptr + row, tl.sum(loss_acc, axis=0) * inv_b)
    tl.store(q_ptr + row, tl.sum(q_acc, axis=0))
    if GRAD:
        tl.store(u_ptr + row * C + offs_c, tl.sum(u_acc, axis=1), mask=c_ok)
        tl.store(v_ptr + row * C + offs_c, tl.sum(v_acc, axis=1), mask=c_ok)


@triton.jit
def _finalize_kernel(
    loss_part_ptr,  # (B, P) fp32 loss partials
    q_part_ptr,  # (B, P) fp32 partials of q
    u_ptr,  # (B, P, C) fp32 (GRAD)
    v_ptr,  # (B, P, C) fp32 (GRAD)
    loss_ptr,  # (1,) fp32 out (program 0): the loss
    q_ptr,  # (B,) fp32 out (GRAD): q = sum_i R_s a
    g_ptr,  # (B, C) fp32 out (GRAD): g = u - q v = sum_i dz_i (F_i - f)
    B,
    P,
    C,
    GRAD: tl.constexpr,
    CP: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_p = tl.arange(0, BLOCK_P)
    if b == 0:
        acc = tl.zeros([BLOCK_P], dtype=tl.float32)
        for p0 in range(0, B * P, BLOCK_P):
            acc += tl.load(loss_part_ptr + p0 + offs_p, mask=p0 + offs_p < B * P, other=0.0)
        tl.store(loss_ptr, tl.sum(acc, axis=0))
    if GRAD:
        q_vec = tl.zeros([BLOCK_P], dtype=tl.float32)
        for p0 in range(0, P, BLOCK_P):
            q_vec += tl.load(q_part_ptr + b * P + p0 + offs_p, mask=p0 + offs_p < P, other=0.0)
        q = tl.sum(q_vec, axis=0)
        u = _combine_rows(u_ptr + b * P * C, P, C, CP, BLOCK_P)
        v = _combine_rows(v_ptr + b * P * C, P, C, CP, BLOCK_P)
        offs_c = tl.arange(0, CP)
        tl.store(q_ptr + b, q)
        tl.store(g_ptr + b * C + offs_c, u - q * v, mask=offs_c < C)
