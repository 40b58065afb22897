"""Launchers of the relation-distillation loss in five launches (giftnet.kernels.relation.jit_loss).

Each tile spans all channels (CP = next power of 2 of C) by BLOCK_N pixels, about 1024
elements, so one config per channel count: nothing to autotune, the same reduction order on
every run (deterministic mode needs no pin).
"""

from __future__ import annotations

import torch
import triton

from giftnet.kernels._dispatch import interpreter_enabled
from giftnet.kernels.relation.jit_loss import (
    _finalize_kernel,
    _pair_logits_kernel,
    _pair_sums_kernel,
    _pair_terms_kernel,
)
from giftnet.kernels.relation.launch import _Features
from giftnet.kernels.relation.reference import AREA_EPS

TILE_ELEMENTS = 1024  # CP * BLOCK_N per tile, at least 8 pixels (2048 and 4096 spill 8 B in generic compiles)
BLOCK_P = 32  # per-program partials combined this many at a time
# The logits kernel combines two (BLOCK_P, CP) fp32 blocks of partials. Left uncapped, ptxas aims
# an 8-warp build at 64 registers and, under Triton 3.6, spills 4 B of the C = 256 fp32
# channels_last site build on sm_86 to get there; at 128 (two 8-warp blocks per SM, where the
# uncapped build fits three or four) it takes 105-128 and spills nothing at any C, dtype or
# layout, under Triton 3.6 and 3.9. Smaller combine blocks (BLOCK_P 16 or 8) do not avoid it:
# uncapped, ptxas then spills 8 B elsewhere at 32-64 registers.
LOGITS_MAXNREG = 128


def logits_cap() -> dict[str, int]:
    """The logits kernel's register cap as a launch keyword (the interpreter has no registers)."""
    return {} if interpreter_enabled() else {"maxnreg": LOGITS_MAXNREG}


def tile_config(channels: int) -> dict[str, int]:
    """Meta-parameters and warps of the loss kernels for `channels` channels."""
    cp = triton.next_power_of_2(max(channels, 1))
    block_n = max(8, min(128, TILE_ELEMENTS // cp))
    return {"CP": cp, "BLOCK_N": block_n, "num_warps": 8 if cp * block_n >= 1024 else 4}


def loss_forward(
    fs: _Features, ft: _Features, m: torch.Tensor, gamma: float, need_grad: bool
) -> tuple[torch.Tensor, ...]:
    """(loss, terms, q, inv_area, f, g) in four launches; without need_grad only the loss is
    filled (the rest are empty). terms (2, B, N): R_s and a = 2 (R_s - R_t); q (B,); f (B, C)
    the student's foreground mean; g (B, C) = sum_i dz_i (F_i - f)."""
    b, c, n, p, chunk, dev = fs.b, fs.c, fs.n, fs.p, fs.chunk, m.device

    def new(*shape: int) -> torch.Tensor:
        return torch.empty(shape, device=dev, dtype=torch.float32)

    cfg = tile_config(c)
    meta = {"CP": cfg["CP"], "BLOCK_N": cfg["BLOCK_N"], "num_warps": cfg["num_warps"], "num_stages": 1}
    strides = (fs.sb, fs.sc, fs.sp, ft.sb, ft.sc, ft.sp)
    part = new(2, b, p, c)
    wsum = new(b, p)
    _pair_sums_kernel[(b, p)](fs.x, ft.x, m, part, wsum, *strides, c, n, chunk, **meta)
    f = new(2, b, c)
    inv_area = new(b)
    z = new(2, b, n)
    mx = new(2, b, p)
    se = new(2, b, p)
    _pair_logits_kernel[(b, p)](
        fs.x, ft.x, part, wsum, f, inv_area, z, mx, se, *strides, c, n, chunk, AREA_EPS, -float(gamma),
        BLOCK_P=BLOCK_P, **meta, **logits_cap(),
    )  # fmt: skip
    loss_part = new(b, p)
    q_part = new(b, p)
    uv = new(2, b, p, c) if need_grad else new(2, 1)
    terms = new(2, b, n) if need_grad else new(2, 1)
    _pair_terms_kernel[(b, p)](
        fs.x, z, mx, se, f, loss_part, q_part, uv[0], uv[1], terms, fs.sb, fs.sc, fs.sp, c, n, chunk, 1.0 / b,
        GRAD=need_grad, BLOCK_P=BLOCK_P, **meta,
    )  # fmt: skip
    del z
    loss = new(1)
    q = new(b if need_grad else 1)
    g = new(b, c) if need_grad else new(1)
    _finalize_kernel[(b,)](
        loss_part, q_part, uv[0], uv[1], loss, q, g, b, p, c,
        GRAD=need_grad, CP=cfg["CP"], BLOCK_P=BLOCK_P, num_warps=4, num_stages=1,
    )  # fmt: skip
    return loss.reshape(()), terms, q, inv_area, f[0], g
