"""Ahead-of-time compile specs of the relation kernels: each kernel x tile config x dtype x layout."""

from __future__ import annotations

from giftnet.kernels.aot import AotSpec, site_divisible
from giftnet.kernels.relation import jit_loss
from giftnet.kernels.relation.jit import _channel_sum_kernel, _grad_kernel, _logits_kernel, _mean_kernel
from giftnet.kernels.relation.launch import _TRITON_DTYPE, CONFIGS, DTYPES, MEAN_CONFIG
from giftnet.kernels.relation.launch_loss import BLOCK_P, LOGITS_MAXNREG, tile_config

__all__ = ["AOT_LAYOUTS", "CONFIGS", "DTYPES", "LOSS_CHANNELS", "LOSS_DTYPES", "aot_divisible", "aot_specs"]

# The loss kernels specialise on the channel count (CP): GiftNet's sites have these. fp16
# compiles to nearly the code of bf16, so the loss kernels are compiled in bf16 and fp32.
LOSS_CHANNELS = (32, 64, 128, 256)
LOSS_DTYPES = ("bf16", "fp32")


# Triton turns integer arguments equal to 1 into constexprs at launch, so each layout compiles
# to its own code: NCHW has a unit pixel stride, channels_last a unit channel stride (other
# layouts are copied to NCHW first). Degenerate sizes (a 1x1 map, C = 1) specialise further
# and are left to the GPU tests.
AOT_LAYOUTS = {"nchw": ("stride_xp", "stride_gp"), "channels_last": ("stride_xc", "stride_gc")}
LOSS_LAYOUTS = {"nchw": ("stride_sp", "stride_tp"), "channels_last": ("stride_sc", "stride_tc")}


def _feature_signatures(ptr: str) -> dict[str, tuple[object, dict[str, str]]]:
    """Kernel and runtime signature of each feature-reading kernel for feature pointer type `ptr`."""
    f32, i32 = "*fp32", "i32"
    xs = {"x_ptr": ptr, "stride_xb": i32, "stride_xc": i32, "stride_xp": i32}
    sizes = {"C": i32, "N": i32, "chunk": i32}
    grad = {
        **xs,
        **dict.fromkeys(("dz_ptr", "m_ptr", "inv_area_ptr", "f_ptr", "g_ptr", "up_ptr", "a_ptr", "q_ptr"), f32),
    }
    grad["grad_ptr"] = ptr
    grad_sig = {**grad, "stride_gb": i32, "stride_gc": i32, "stride_gp": i32, **sizes, "two_gamma": "fp32"}
    return {
        "channel_sum": (
            _channel_sum_kernel,
            {**xs, "w_ptr": f32, "center_ptr": f32, "out_ptr": f32, "wsum_ptr": f32, **sizes},
        ),
        "logits": (
            _logits_kernel,
            {**xs, "f_ptr": f32, "z_ptr": f32, "max_ptr": f32, "sum_ptr": f32, **sizes, "neg_gamma": "fp32"},
        ),
        "grad_loss": (_grad_kernel, grad_sig),
        "grad_map": (_grad_kernel, grad_sig),
    }


def _feature_specs() -> list[AotSpec]:
    """The map's kernels and the backward: each tile config x dtype x layout."""
    specs = []
    for cfg in CONFIGS:
        tag = "c{BLOCK_C}-n{BLOCK_N}".format(**cfg.kwargs) + f"-w{cfg.num_warps}"
        for tname in _TRITON_DTYPE.values():
            for name, (kernel, sig) in _feature_signatures("*" + tname).items():
                extra = {"FROM_TERMS": name == "grad_loss"} if name.startswith("grad") else {}
                for layout, unit in AOT_LAYOUTS.items():
                    unit_strides = {k: 1 for k in unit if k in sig}
                    specs.append(
                        AotSpec(
                            name=f"{name}[{tname},{layout},{tag}]",
                            fn=kernel,
                            signature={k: v for k, v in sig.items() if k not in unit_strides},
                            constexprs={**unit_strides, **extra, **cfg.kwargs},
                            num_warps=cfg.num_warps,
                            num_stages=cfg.num_stages,
                        )
                    )
    return specs


def _loss_signatures(ptr: str) -> dict[str, tuple[object, dict[str, str], dict[str, object]]]:
    """The loss's feature-reading kernels: (kernel, runtime signature, extra constexprs)."""
    f32, i32 = "*fp32", "i32"
    strides = {f"stride_{t}{d}": i32 for t in "st" for d in "bcp"}
    sizes = {"C": i32, "N": i32, "chunk": i32}
    sums = {"s_ptr": ptr, "t_ptr": ptr, "m_ptr": f32, "part_ptr": f32, "wsum_ptr": f32, **strides, **sizes}
    logit_ptrs = ("part_ptr", "wsum_ptr", "f_ptr", "inv_area_ptr", "z_ptr", "max_ptr", "sum_ptr")
    logits = {"s_ptr": ptr, "t_ptr": ptr, **dict.fromkeys(logit_ptrs, f32), **strides, **sizes}
    logits |= {"area_eps": "fp32", "neg_gamma": "fp32"}
    term_ptrs = ("z_ptr", "max_ptr", "sum_ptr", "f_ptr", "loss_ptr", "q_ptr", "u_ptr", "v_ptr", "terms_ptr")
    terms = {"s_ptr": ptr, **dict.fromkeys(term_ptrs, f32), "stride_sb": i32, "stride_sc": i32, "stride_sp": i32}
    terms |= {**sizes, "inv_b": "fp32"}
    return {
        "loss_sums": (jit_loss._pair_sums_kernel, sums, {}),
        "loss_logits": (jit_loss._pair_logits_kernel, logits, {"BLOCK_P": BLOCK_P}),
        "loss_terms": (jit_loss._pair_terms_kernel, terms, {"BLOCK_P": BLOCK_P, "GRAD": False}),
        "loss_terms_grad": (jit_loss._pair_terms_kernel, terms, {"BLOCK_P": BLOCK_P, "GRAD": True}),
    }


def _loss_specs() -> list[AotSpec]:
    """The loss's kernels at GiftNet's channel counts (one tile config each), dtypes and layouts."""
    specs = []
    for c in LOSS_CHANNELS:
        cfg = tile_config(c)
        meta = {"CP": cfg["CP"], "BLOCK_N": cfg["BLOCK_N"]}
        for tname in LOSS_DTYPES:
            for name, (kernel, sig, extra) in _loss_signatures("*" + tname).items():
                for layout, unit in LOSS_LAYOUTS.items():
                    unit_strides = {k: 1 for k in unit if k in sig}
                    specs.append(
                        AotSpec(
                            name=f"{name}[{tname},{layout},C{c}]",
                            fn=kernel,
                            signature={k: v for k, v in sig.items() if k not in unit_strides},
                            constexprs={**unit_strides, **extra, **meta},
                            num_warps=cfg["num_warps"],
                            num_stages=1,
                            maxnreg=LOGITS_MAXNREG if name == "loss_logits" else None,
                        )
                    )
        sig = {k: "*fp32" for k in ("loss_part_ptr", "q_part_ptr", "u_ptr", "v_ptr", "loss_ptr", "q_ptr", "g_ptr")}
        sig |= {"B": "i32", "P": "i32", "C": "i32"}
        for grad in (False, True):
            consts = {"GRAD": grad, "CP": cfg["CP"], "BLOCK_P": BLOCK_P}
            name = f"loss_finalize[fp32,C{c},grad={int(grad)}]"
            specs.append(AotSpec(name, jit_loss._finalize_kernel, sig, consts, num_warps=4, num_stages=1))
    return specs


def aot_specs() -> list[AotSpec]:
    """Every launch these ops may make."""
    specs = _feature_specs() + _loss_specs()
    cfg = MEAN_CONFIG
    sig = {**dict.fromkeys(("part_ptr", "wsum_ptr", "f_ptr", "inv_area_ptr"), "*fp32"), "B": "i32", "P": "i32"}
    sig.update(C="i32", area_eps="fp32")
    specs.append(AotSpec("mean[fp32]", _mean_kernel, sig, dict(cfg.kwargs), cfg.num_warps, cfg.num_stages))
    return specs


def aot_divisible(spec: AotSpec) -> tuple[str, ...]:
    """Arguments of `spec` that are multiples of 16 at E1-E4 sizes (giftnet.kernels.aot.site_divisible)."""
    return site_divisible(spec)
