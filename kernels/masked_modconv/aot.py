"""Ahead-of-time compile specs of the masked modulated convolution's kernels.

One `AotSpec` per kernel x autotune config x dtype x layout. The layout matters because
Triton specializes integer arguments equal to 1 at launch: unit strides become constexprs, so
NCHW tensors (unit W stride) and channels_last tensors (unit C stride) compile to different
code. The specs mirror that by fixing those strides to 1. `compile_specialized` also marks
the other arguments 16-divisible, as the launcher does at the GiftNet sites.
"""

from __future__ import annotations

import dataclasses

import torch

from giftnet.kernels.aot import AotSpec, Resources, compile_spec, config_tag, site_variant
from giftnet.kernels.masked_modconv import jit, launch

DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _strides(sig: dict[str, str], tensors: tuple[str, ...], layout: str) -> dict[str, int]:
    """Add each tensor's non-unit strides (and the mask's) to `sig` as "i32"; return the unit ones.

    The unit stride (W in NCHW, C in channels_last, W of the mask) is a constexpr 1, as Triton
    specializes it at launch."""
    unit = "w" if layout == "nchw" else "c"
    strides: dict[str, object] = {f"stride_{t}{d}": 1 if d == unit else "i32" for t in tensors for d in "bchw"}
    strides |= {"stride_mb": "i32", "stride_mh": "i32", "stride_mw": 1}
    sig |= {k: v for k, v in strides.items() if isinstance(v, str)}
    return {k: 1 for k, v in strides.items() if v == 1}


def _fwd_specs(dtype: torch.dtype, layout: str) -> list[AotSpec]:
    t = DTYPES[dtype]
    ptr = f"*{t}"
    sig = {"inp_ptr": ptr, "w_ptr": ptr, "scale_in_ptr": "*fp32", "scale_out_ptr": "*fp32"}
    sig |= {"mask_ptr": ptr, "res_ptr": ptr, "out_ptr": ptr, "C": "i32", "H": "i32", "W": "i32", "size_bucket": "i32"}
    unit_strides = _strides(sig, ("i", "r", "o"), layout)
    return [
        AotSpec(
            name=f"conv3x3_scale_blend[{t},{layout},{config_tag(cfg)}]",
            fn=jit.conv3x3_scale_blend_kernel,
            signature=dict(sig),
            constexprs={**unit_strides, **cfg.kwargs},
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
            maxnreg=cfg.maxnreg,
        )
        for cfg in launch.FWD_CONFIGS
    ]


def _corr_specs(dtype: torch.dtype, layout: str) -> list[AotSpec]:
    t = DTYPES[dtype]
    ptr = f"*{t}"
    sig = {"dy_ptr": ptr, "x_ptr": ptr, "mask_ptr": ptr, "part_ptr": "*fp32"}
    sig |= {"B": "i32", "C": "i32", "H": "i32", "W": "i32", "size_bucket": "i32", "chunk_rows": "i32"}
    unit_strides = _strides(sig, ("d", "x"), layout)
    return [
        AotSpec(
            name=f"tap_correlation[{t},{layout},{config_tag(cfg)}]",
            fn=jit.tap_correlation_kernel,
            signature=dict(sig),
            constexprs={**unit_strides, **cfg.kwargs},
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
            maxnreg=cfg.maxnreg,
        )
        for cfg in launch.CORR_CONFIGS
    ]


def aot_specs(layouts: tuple[str, ...] = ("nchw", "channels_last")) -> list[AotSpec]:
    """Both kernels, every autotune config, fp32/fp16/bf16, in each layout."""
    specs: list[AotSpec] = []
    for dtype in DTYPES:
        for layout in layouts:
            specs += _fwd_specs(dtype, layout) + _corr_specs(dtype, layout)
    return specs


def compile_specialized(spec: AotSpec, arch: int) -> Resources:
    """Like `giftnet.kernels.aot.compile_spec`, with the runtime arguments marked divisible by 16
    (`giftnet.kernels.aot.site_variant`: all but the autotune key size_bucket).

    At the GiftNet sites (C in {32, ..., 256}, H = W in {32, ..., 256}) Triton's launcher
    specializes every pointer and integer argument as 16-divisible, which turns on vectorized,
    asynchronously pipelined loads: more shared memory and different register use than the
    generic compile, so the resources of that variant are checked too.
    """
    r = compile_spec(site_variant(spec), arch)
    return dataclasses.replace(r, name=spec.name + "[div16]")
