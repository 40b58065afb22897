"""Ahead-of-time compile specs of the relation kernels: each kernel x tile config x dtype x layout."""

from __future__ import annotations

from kernels.aot import AotSpec
from kernels.relation.jit import _channel_sum_kernel, _grad_kernel, _logits_kernel, _loss_terms_kernel, _mean_kernel
from kernels.relation.launch import _TRITON_DTYPE, CONFIGS, DTYPES, LOSS_TERMS_CONFIG, MEAN_CONFIG

__all__ = ["AOT_LAYOUTS", "CONFIGS", "DTYPES", "aot_divisible", "aot_specs"]


# Triton turns integer arguments equal to 1 into constexprs at launch, so each layout compiles
# to its own code: NCHW has a unit pixel stride, channels_last a unit channel stride (other
# layouts are copied to NCHW first). Degenerate sizes (a 1x1 map, C = 1) specialise further
# and are left to the GPU tests.
AOT_LAYOUTS = {"nchw": ("stride_xp", "stride_gp"), "channels_last": ("stride_xc", "stride_gc")}


def _feature_signatures(ptr: str) -> dict[str, tuple[object, dict[str, str]]]:
    """Kernel and runtime signature of each feature-reading kernel for feature pointer type `ptr`."""
    f32, i32 = "*fp32", "i32"
    xs = {"x_ptr": ptr, "stride_xb": i32, "stride_xc": i32, "stride_xp": i32}
    sizes = {"C": i32, "N": i32, "chunk": i32}
    grad = {**xs, **dict.fromkeys(("dz_ptr", "m_ptr", "inv_area_ptr", "f_ptr", "g_ptr", "up_ptr"), f32)}
    grad["grad_ptr"] = ptr
    return {
        "channel_sum": (
            _channel_sum_kernel,
            {**xs, "w_ptr": f32, "center_ptr": f32, "out_ptr": f32, "wsum_ptr": f32, **sizes},
        ),
        "logits": (
            _logits_kernel,
            {**xs, "f_ptr": f32, "z_ptr": f32, "max_ptr": f32, "sum_ptr": f32, **sizes, "neg_gamma": "fp32"},
        ),
        "grad": (
            _grad_kernel,
            {**grad, "stride_gb": i32, "stride_gc": i32, "stride_gp": i32, **sizes, "two_gamma": "fp32"},
        ),
    }


def aot_specs() -> list[AotSpec]:
    """Every launch these ops may make: each kernel x tile config x dtype x layout."""
    specs = []
    for cfg in CONFIGS:
        tag = "c{BLOCK_C}-n{BLOCK_N}".format(**cfg.kwargs) + f"-w{cfg.num_warps}"
        for tname in _TRITON_DTYPE.values():
            for name, (kernel, sig) in _feature_signatures("*" + tname).items():
                for layout, unit in AOT_LAYOUTS.items():
                    unit_strides = {k: 1 for k in unit if k in sig}
                    specs.append(
                        AotSpec(
                            name=f"{name}[{tname},{layout},{tag}]",
                            fn=kernel,
                            signature={k: v for k, v in sig.items() if k not in unit_strides},
                            constexprs={**unit_strides, **cfg.kwargs},
                            num_warps=cfg.num_warps,
                            num_stages=cfg.num_stages,
                        )
                    )
    ptrs = ("zs_ptr", "zt_ptr", "ms_ptr", "ss_ptr", "mt_ptr", "st_ptr", "loss_ptr", "q_ptr", "r_ptr", "a_ptr")
    sig = {**dict.fromkeys(ptrs, "*fp32"), "N": "i32", "P": "i32", "chunk": "i32", "inv_b": "fp32"}
    cfg = LOSS_TERMS_CONFIG
    for keep in (False, True):
        consts = {"STORE_TERMS": keep, **cfg.kwargs}
        name = f"loss_terms[fp32,store={int(keep)}]"
        specs.append(AotSpec(name, _loss_terms_kernel, sig, consts, num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    cfg = MEAN_CONFIG
    sig = {**dict.fromkeys(("part_ptr", "wsum_ptr", "f_ptr", "inv_area_ptr"), "*fp32"), "B": "i32", "P": "i32"}
    sig.update(C="i32", area_eps="fp32")
    specs.append(AotSpec("mean[fp32]", _mean_kernel, sig, dict(cfg.kwargs), cfg.num_warps, cfg.num_stages))
    return specs


def aot_divisible(spec: AotSpec) -> tuple[str, ...]:
    """Arguments of `spec` that are multiples of 16 at E1-E4 sizes (pointers, sizes, strides):
    Triton specializes on that at launch, and it decides vector widths and registers."""
    return tuple(k for k, v in spec.signature.items() if v.startswith("*") or (v == "i32" and k not in ("B", "P")))
