"""Tile configs and launcher of the masked modulated convolution's conv kernel (giftnet.kernels.masked_modconv.jit)
and the helpers the launchers share (the weight and style gradients: launch_grads.py).

Configs are triton.Config everywhere. The autotuners are pruned by channel count (no channel tile
wider than C needs: a 64-wide output tile at C = 32 computes zeros), keyed on the channel count
and the layout only (not H and W: a new image size must not re-tune), and pinned to one config
in deterministic mode (giftnet.kernels._dispatch.launch).
"""

from __future__ import annotations

import torch
import triton

from giftnet.kernels._dispatch import autotuned, launch
from giftnet.kernels.masked_modconv.jit import conv3x3_scale_blend_kernel

# GiftNet's sites have C in {32, 64, 128, 256} at 256^2 ... 32^2 pixels: many pixels, few
# channels. The narrow tile serves C = 32, the middle one C = 64/128, the wide one C = 128/256.
# Each compiles without spills for sm_86 and sm_90 in fp32/fp16/bf16 and both layouts
# (tests/test_aot_masked_modconv.py), also when specialized on 16-divisible shapes as at the
# GiftNet sites; 128x128 tiles spill. No config is capped below the hardware's 255 registers per
# thread (maxnreg, which giftnet.kernels._dispatch.launch and giftnet.kernels.aot pass through): at
# 128, the cap that lets two 8-warp blocks share an SM, the 8-warp conv tile spills 16-128 B of
# stack in the generic compile (the site-specialized one fits); the weight/style gradient kernel
# (launch_grads.py), which holds two fp32 channel tiles per program, is not capped either. The
# 8x8x64 tile states the 255 explicitly: without a cap, Triton 3.6's ptxas squeezes its fp16/bf16
# NCHW site build to 128 registers on sm_86 and spills 4 B to get there (bench/results/aot-triton3.6.json);
# told the real budget it spills nothing under Triton 3.6 and 3.9 alike, taking 127-179 registers
# in fp16/bf16 (up to 233 in fp32): 2-3 blocks per SM where uncapped builds fit 3-4, a trade to
# measure on the GPU. A cap of 168 (3 blocks) spills 8-24 B in 3.9's unspecialised compiles.
# Pixel tiles are 2-D (BLOCK_H x BLOCK_W) so that a tile is compact and, on object masks, more
# often entirely background (skipped): 8x8 tiles skip 75-87% of E1's tiles on real masks, rows of
# 128 pixels 65-73% (bench/results/sites.md).
FWD_CONFIGS = (
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_O": 32, "BLOCK_I": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_O": 64, "BLOCK_I": 32}, num_warps=4, num_stages=3, maxnreg=255),
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

_fwd_tuned = autotuned(conv3x3_scale_blend_kernel, FWD_CONFIGS, FWD_KEY, FWD_TILES)


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
