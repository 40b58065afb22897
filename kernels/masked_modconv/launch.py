"""Tile configs and launchers of the masked modulated convolution's kernels (giftnet.kernels.masked_modconv.jit).

Configs are triton.Config everywhere. The autotuners are pruned by channel count (no channel tile
wider than C needs: a 64-wide output tile at C = 32 computes zeros), keyed on the channel count
and the layout only (not H and W: a new image size must not re-tune), and pinned to one config
in deterministic mode (giftnet.kernels._dispatch.launch).
"""

from __future__ import annotations

import torch
import triton

from giftnet.kernels._dispatch import autotuned, forced_param, interpreter_enabled, launch
from giftnet.kernels.masked_modconv.jit import conv3x3_scale_blend_kernel, tap_correlation_kernel

# GiftNet's sites have C in {32, 64, 128, 256} at 256^2 ... 32^2 pixels: many pixels, few
# channels. The narrow tile serves C = 32, the middle one C = 64/128, the wide one C = 128/256.
# Each compiles without spills for sm_86 and sm_90 in fp32/fp16/bf16 and both layouts
# (tests/test_aot_masked_modconv.py), also when specialized on 16-divisible shapes as at the
# GiftNet sites; 128x128 tiles spill. No 8-warp config is register-capped (maxnreg, which
# giftnet.kernels._dispatch.launch and giftnet.kernels.aot pass through): at 128 registers per thread, the cap
# that lets two 8-warp blocks share an SM, the 8-warp conv tile spills 16-128 B of stack in the
# generic compile (the site-specialized one fits), and the correlation's 32x32 (8x16 pixels)
# and 128x64 tiles spill 24-264 B even as specialized at the sites.
# Pixel tiles are 2-D (BLOCK_H x BLOCK_W) so that a tile is compact and, on object masks, more
# often entirely background (skipped): 8x8 tiles skip 75-87% of E1's tiles on real masks, rows of
# 128 pixels 65-73% (bench/results/sites.md).
FWD_CONFIGS = (
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_O": 32, "BLOCK_I": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_O": 64, "BLOCK_I": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_O": 64, "BLOCK_I": 32}, num_warps=8, num_stages=3),
)
# Under TRITON_INTERPRET=1 (no autotune) one fixed config; large tiles run fastest there. Tests
# force small tiles through giftnet.kernels._dispatch.forced_launch to cover several channel tiles.
FWD_INTERPRETER_CONFIG = triton.Config(
    {"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_O": 64, "BLOCK_I": 32}, num_warps=4, num_stages=1
)
# stride_iw: 1 for NCHW, C for channels_last; size_bucket: log4 of the pixel count, so the 4
# map sizes of GiftNet tune apart but a new image size (harmonize --full-res) seldom re-tunes.
FWD_KEY = ["C", "stride_iw", "size_bucket"]
FWD_TILES = ("BLOCK_O",)

# BLOCK_H x BLOCK_W is the reduction step of the correlation. 32x32x64, 64x32x32 and 64x64x32
# tiles with 4 warps spill in fp32.
CORR_CONFIGS = (
    triton.Config({"BLOCK_O": 32, "BLOCK_I": 32, "BLOCK_H": 8, "BLOCK_W": 16}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_H": 4, "BLOCK_W": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_O": 128, "BLOCK_I": 64, "BLOCK_H": 4, "BLOCK_W": 8}, num_warps=8, num_stages=3),
)
CORR_INTERPRETER_CONFIG = triton.Config(
    {"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_H": 8, "BLOCK_W": 16}, num_warps=4, num_stages=1
)
CORR_KEY = ["C", "stride_xw", "size_bucket"]
CORR_TILES = ("BLOCK_O", "BLOCK_I")
# A chunk is a band of rows, a multiple of CHUNK_ROWS (which every BLOCK_H divides), of at
# least MIN_CHUNK_PIXELS pixels.
CHUNK_ROWS = 16
MIN_CHUNK_PIXELS = 1024
MAX_PARTIAL_BYTES = 256 << 20

assert all(CHUNK_ROWS % c.kwargs["BLOCK_H"] == 0 for c in (*CORR_CONFIGS, CORR_INTERPRETER_CONFIG))

_fwd_tuned = autotuned(conv3x3_scale_blend_kernel, FWD_CONFIGS, FWD_KEY, FWD_TILES)
_corr_tuned = autotuned(tap_correlation_kernel, CORR_CONFIGS, CORR_KEY, CORR_TILES)


def pack_weight_forward(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (9, C_in, C_out) contiguous in `dtype`: Wp[k, i, o] = W[o, i, k]."""
    c_out, c_in = weight.shape[:2]
    return weight.detach().to(dtype).permute(2, 3, 1, 0).reshape(9, c_in, c_out).contiguous()


def pack_weight_transposed(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Weights of the transposed convolution: Wp[k, o, i] = W[o, i, 8 - k] (taps mirrored)."""
    c_out, c_in = weight.shape[:2]
    return weight.detach().to(dtype).flip(2, 3).permute(2, 3, 0, 1).reshape(9, c_out, c_in).contiguous()


def dense(t: torch.Tensor) -> torch.Tensor:
    """An input as the kernels read it: t itself when its width or channel stride is 1 (NCHW or
    channels_last, views such as crops included: the kernels take any strides), else a
    contiguous copy (e.g. gradients expanded from a scalar, with all strides 0)."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    if t.dim() == 4 and min(t.stride()) >= 0 and 1 in (t.stride(1), t.stride(3)):
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
) -> torch.Tensor:
    """Launch the conv kernel (see giftnet.kernels.masked_modconv.jit); the result has inp's dtype and memory format."""
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
        size_bucket(h, w),
        *inp.stride(),
        mask.stride(0),
        mask.stride(2),
        mask.stride(3),
        *res.stride(),
        *out.stride(),
    )

    def grid(meta):
        tiles = triton.cdiv(h, meta["BLOCK_H"]) * triton.cdiv(w, meta["BLOCK_W"])
        return (tiles * triton.cdiv(c, meta["BLOCK_O"]), b)

    launch(
        conv3x3_scale_blend_kernel, _fwd_tuned, grid, *args,
        interpreter_config=FWD_INTERPRETER_CONFIG, channels=c, tile_keys=FWD_TILES,
    )  # fmt: skip
    return out


def size_bucket(h: int, w: int) -> int:
    """log4 of the pixel count, rounded down: the image-size part of the autotune keys."""
    return max(0, (h * w).bit_length() - 1) // 2


def choose_chunks(batch: int, channels: int, pixels: int, num_sms: int) -> int:
    """Row-band chunks per sample: enough programs to fill the GPU, bounded partial-buffer memory."""
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
) -> torch.Tensor:
    """G[b, k, o, i] = sum_p (dy m)[b, o, p] (x m)[b, i, p + off(k)] in fp32, shape (B, 9, C, C).

    chunks: row-band chunks per sample wanted (default: `choose_chunks`); bands are whole
    multiples of CHUNK_ROWS rows, so fewer may run.
    """
    b, c, h, w = x.shape
    if dy.dtype != x.dtype:
        raise ValueError(f"tap_correlation: dy is {dy.dtype} but x is {x.dtype}")
    for name, t in (("dy", dy), ("x", x), ("mask", mask)):
        check_int32_extent(t, name)
    if chunks is None:
        sms = 4 if interpreter_enabled() else torch.cuda.get_device_properties(x.device).multi_processor_count
        chunks = choose_chunks(b, c, h * w, sms)
    forced = forced_param("config")
    if forced is not None and CHUNK_ROWS % forced.kwargs["BLOCK_H"]:
        raise ValueError(f"tap_correlation: a forced BLOCK_H must divide CHUNK_ROWS = {CHUNK_ROWS}")
    chunk_rows = triton.cdiv(triton.cdiv(h, chunks), CHUNK_ROWS) * CHUNK_ROWS
    chunks = triton.cdiv(h, chunk_rows)
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
        size_bucket(h, w),
        chunk_rows,
        *dy.stride(),
        *x.stride(),
        mask.stride(0),
        mask.stride(2),
        mask.stride(3),
    )

    def grid(meta):
        return (9 * triton.cdiv(c, meta["BLOCK_O"]) * triton.cdiv(c, meta["BLOCK_I"]), chunks, b)

    launch(
        tap_correlation_kernel, _corr_tuned, grid, *args,
        interpreter_config=CORR_INTERPRETER_CONFIG, channels=c, tile_keys=CORR_TILES,
    )  # fmt: skip
    return part[0] if chunks == 1 else part.sum(0)
