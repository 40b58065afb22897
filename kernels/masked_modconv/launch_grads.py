"""Tile configs and the launcher of the weight and style gradients (giftnet.kernels.masked_modconv.jit_grads).

Two launches: the partials kernel (every pixel step of the correlation, folded per sample into
small partial buffers) and the finalize. Configs are pruned by channel count, keyed on the
channel count and the layout (not H and W), and pinned in deterministic mode
(giftnet.kernels._dispatch.launch), as the convolution's are.
"""

from __future__ import annotations

import dataclasses

import torch
import triton

from giftnet.kernels._dispatch import autotuned, forced_param, interpreter_enabled, launch
from giftnet.kernels.masked_modconv.jit_grads import weight_style_finalize_kernel, weight_style_partials_kernel
from giftnet.kernels.masked_modconv.launch import check_int32_extent, size_bucket

# BLOCK_H x BLOCK_W is the pixel step of the correlation. A program holds two fp32 channel tiles
# (its sample's G and its slot's running dW) and the weight tile across its loops, so tiles are
# smaller than the old per-sample correlation's: both configs compile without spills for sm_86
# and sm_90, fp32/fp16/bf16, both layouts, generic and site-specialized
# (tests/test_aot_masked_modconv.py). Spilled (generic or site builds, 8-128 B and more): 128x64
# with 4x8 or 2x8 pixels and 8 warps, 64x64 with 8x8 pixels, 32x32 with 8x16 pixels and 8
# warps, 32x32 with 4x8 or 4x16 pixels and 4 warps.
GRAD_CONFIGS = (
    triton.Config({"BLOCK_O": 32, "BLOCK_I": 32, "BLOCK_H": 8, "BLOCK_W": 8}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_H": 4, "BLOCK_W": 8}, num_warps=8, num_stages=3),
)
GRAD_INTERPRETER_CONFIG = triton.Config(
    {"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_H": 8, "BLOCK_W": 16}, num_warps=4, num_stages=1
)
GRAD_KEY = ["C", "stride_xw", "size_bucket"]
GRAD_TILES = ("BLOCK_O", "BLOCK_I")
# The finalize reads the partials once: its tile only sets how many programs share that.
FIN_CONFIGS = (
    triton.Config({"BLOCK_O": 32, "BLOCK_I": 32}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_O": 64, "BLOCK_I": 64}, num_warps=8, num_stages=1),
)
FIN_INTERPRETER_CONFIG = FIN_CONFIGS[1]
FIN_KEY = ["C"]
FIN_TILES = ("BLOCK_O", "BLOCK_I")

# A band is a multiple of CHUNK_ROWS rows (which every BLOCK_H divides), of at least
# MIN_CHUNK_PIXELS pixels; the dW partials (slots, 9, C, C) stay under MAX_PARTIAL_BYTES.
CHUNK_ROWS = 16
MIN_CHUNK_PIXELS = 1024
MAX_PARTIAL_BYTES = 64 << 20

assert all(CHUNK_ROWS % c.kwargs["BLOCK_H"] == 0 for c in (*GRAD_CONFIGS, GRAD_INTERPRETER_CONFIG))

_grad_tuned = autotuned(weight_style_partials_kernel, GRAD_CONFIGS, GRAD_KEY, GRAD_TILES)
_fin_tuned = autotuned(weight_style_finalize_kernel, FIN_CONFIGS, FIN_KEY, FIN_TILES)


@dataclasses.dataclass(frozen=True)
class Slots:
    """How the partials kernel splits its reduction (samples x pixels) beyond the channel tiles."""

    group: int  # samples per slot
    band_rows: int  # image rows per band (a multiple of CHUNK_ROWS)
    n_groups: int
    n_bands: int

    @property
    def count(self) -> int:
        return self.n_groups * self.n_bands


def choose_slots(batch: int, channels: int, height: int, width: int, num_sms: int, want: int | None = None) -> Slots:
    """Slots (groups of samples, then bands of rows) to fill the GPU with about 4 programs per SM
    at a nominal 64-wide channel tile, within MAX_PARTIAL_BYTES of dW partials and bands of at
    least MIN_CHUNK_PIXELS. Chosen before the autotuner picks a tile, so that the buffers do not
    depend on it. `want`: slots wanted (tests), then bands need only be CHUNK_ROWS rows."""
    min_pixels = MIN_CHUNK_PIXELS if want is None else 1
    if want is None:
        want = triton.cdiv(4 * num_sms, 9 * triton.cdiv(channels, 64) ** 2)
    want = max(1, min(want, MAX_PARTIAL_BYTES // (9 * channels * channels * 4)))
    if want <= batch:
        group = triton.cdiv(batch, want)
        return Slots(group, triton.cdiv(height, CHUNK_ROWS) * CHUNK_ROWS, triton.cdiv(batch, group), 1)
    bands = max(1, min(triton.cdiv(want, batch), height * width // min_pixels))
    rows = triton.cdiv(triton.cdiv(height, bands), CHUNK_ROWS) * CHUNK_ROWS
    return Slots(1, rows, batch, triton.cdiv(height, rows))


def _candidates(tuned, interpreter_config) -> list:
    """The configs `launch` may run: the forced one, the interpreter's, or the autotuner's."""
    forced = forced_param("config")
    if forced is not None:
        return [forced]
    return [interpreter_config] if interpreter_enabled() else list(tuned.configs)


def weight_style_grads(
    dy: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    demod: torch.Tensor | None,
    *,
    style_dtype: torch.dtype = torch.float32,
    slots: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dW in weight's dtype, contiguous (C, C, 3, 3); dstyle (B, C) in `style_dtype`) of the
    masked modulated convolution, from dy, x and the mask (dtype of x) in two launches.

    style and demod: (B, C) fp32 contiguous; demod None when not demodulating. slots: the
    number of slots wanted (default `choose_slots`; also `forced_launch(slots=...)`).
    """
    b, c, h, w = x.shape
    if dy.dtype != x.dtype or mask.dtype != x.dtype:
        raise ValueError(f"weight_style_grads: dy ({dy.dtype}) and mask ({mask.dtype}) must have x's dtype {x.dtype}")
    for name, t in (("style", style), *((("demod", demod),) if demod is not None else ())):
        if t.shape != (b, c) or t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError(f"weight_style_grads: {name} must be contiguous fp32 ({b}, {c})")
    for name, t in (("dy", dy), ("x", x), ("mask", mask)):
        check_int32_extent(t, name)
    forced = forced_param("config")
    if forced is not None and CHUNK_ROWS % forced.kwargs["BLOCK_H"]:
        raise ValueError(f"weight_style_grads: a forced BLOCK_H must divide CHUNK_ROWS = {CHUNK_ROWS}")
    sms = 4 if interpreter_enabled() else torch.cuda.get_device_properties(x.device).multi_processor_count
    sl = choose_slots(b, c, h, w, sms, slots if slots is not None else forced_param("slots"))
    if sl.count > 65535:
        raise ValueError(f"weight_style_grads: grid too large ({sl.count} slots)")
    cands = _candidates(_grad_tuned, GRAD_INTERPRETER_CONFIG)
    t_tiles = max(triton.cdiv(c, cfg.kwargs["BLOCK_I"]) for cfg in cands)  # the smallest tile's count
    s_tiles = max(triton.cdiv(c, cfg.kwargs["BLOCK_O"]) for cfg in cands)
    w32 = weight.detach().float().contiguous()
    d = demod if demod is not None else torch.ones_like(style)
    dev, f32 = x.device, torch.float32
    dw_part = torch.empty((sl.count, 9, c, c), device=dev, dtype=f32)
    t_part = torch.empty((b, sl.n_bands, 9, t_tiles, c) if demod is not None else (1,), device=dev, dtype=f32)
    ds_part = torch.empty((b, sl.n_bands, 9, s_tiles, c), device=dev, dtype=f32)
    args = (
        dy, x, mask, w32, style, d, dw_part, t_part, ds_part, b, c, h, w, size_bucket(h, w),
        sl.band_rows, sl.n_bands, sl.group, t_tiles, s_tiles, *dy.stride(), *x.stride(),
        mask.stride(0), mask.stride(2), mask.stride(3),
    )  # fmt: skip

    def grid(meta):
        return (9 * triton.cdiv(c, meta["BLOCK_O"]) * triton.cdiv(c, meta["BLOCK_I"]), sl.count)

    used = launch(
        weight_style_partials_kernel, _grad_tuned, grid, *args, DEMOD=demod is not None,
        interpreter_config=GRAD_INTERPRETER_CONFIG, channels=c, tile_keys=GRAD_TILES,
    )  # fmt: skip
    n_o, n_i = (triton.cdiv(c, used.kwargs[k]) for k in ("BLOCK_O", "BLOCK_I"))
    dw = torch.empty(weight.shape, device=dev, dtype=weight.dtype)
    ds = torch.empty((b, c), device=dev, dtype=style_dtype)

    def fin_grid(meta):
        f_i = triton.cdiv(c, meta["BLOCK_I"])
        return (triton.cdiv(c, meta["BLOCK_O"]) * f_i + b * f_i,)

    launch(
        weight_style_finalize_kernel, _fin_tuned, fin_grid, w32, style, d, dw_part, t_part, ds_part, dw, ds,
        b, c, sl.count, sl.n_bands, n_o, n_i, t_tiles, s_tiles, DEMOD=demod is not None,
        interpreter_config=FIN_INTERPRETER_CONFIG, channels=c, tile_keys=FIN_TILES,
    )  # fmt: skip
    return dw, ds
