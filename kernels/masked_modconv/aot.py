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
from giftnet.kernels.masked_modconv import jit, jit_grads, launch, launch_grads

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


def _grad_specs(dtype: torch.dtype, layout: str) -> list[AotSpec]:
    t = DTYPES[dtype]
    ptr = f"*{t}"
    sig = {"dy_ptr": ptr, "x_ptr": ptr, "mask_ptr": ptr, "w_ptr": "*fp32", "s_ptr": "*fp32", "d_ptr": "*fp32"}
    sig |= {"dw_part_ptr": "*fp32", "t_part_ptr": "*fp32", "ds_part_ptr": "*fp32"}
    sig |= {k: "i32" for k in ("B", "C", "H", "W", "size_bucket", "band_rows", "n_bands", "group")}
    sig |= {"t_tiles": "i32", "s_tiles": "i32"}
    unit_strides = _strides(sig, ("d", "x"), layout)
    return [
        AotSpec(
            name=f"weight_style_partials[{t},{layout},{config_tag(cfg)}]",
            fn=jit_grads.weight_style_partials_kernel,
            signature=dict(sig),
            constexprs={**unit_strides, "DEMOD": True, **cfg.kwargs},
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
            maxnreg=cfg.maxnreg,
        )
        for cfg in launch_grads.GRAD_CONFIGS
    ]


def _finalize_specs(dtype: torch.dtype) -> list[AotSpec]:
    """The finalize reads no feature map (no layout); `dtype` is that of dW and dstyle."""
    t = DTYPES[dtype]
    sig = {k: "*fp32" for k in ("w_ptr", "s_ptr", "d_ptr", "dw_part_ptr", "t_part_ptr", "ds_part_ptr")}
    sig |= {"dw_ptr": f"*{t}", "ds_ptr": f"*{t}"}
    sig |= {k: "i32" for k in ("B", "C", "n_slots", "n_bands", "n_o", "n_i", "t_tiles", "s_tiles")}
    return [
        AotSpec(
            name=f"weight_style_finalize[{t},{config_tag(cfg)}]",
            fn=jit_grads.weight_style_finalize_kernel,
            signature=dict(sig),
            constexprs={"DEMOD": True, **cfg.kwargs},
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
            maxnreg=cfg.maxnreg,
        )
        for cfg in launch_grads.FIN_CONFIGS
    ]


def aot_specs(layouts: tuple[str, ...] = ("nchw", "channels_last")) -> list[AotSpec]:
    """Every kernel, every autotune config, fp32/fp16/bf16, in each layout (the finalize has none)."""
    specs: list[AotSpec] = []
    for dtype in DTYPES:
        for layout in layouts:
            specs += _fwd_specs(dtype, layout) + _grad_specs(dtype, layout)
        specs += _finalize_specs(dtype)
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
