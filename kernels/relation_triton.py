"""Fused relation map and relation-distillation loss in Triton, forward and backward.

Kernels (kernels.relation_triton_kernels) over a (B, P) grid, P programs per sample, each
on one chunk of pixels; per sample:
  1. masked sums     sum_i m_i F_i, sum_i m_i   -> f = sum / max(area, AREA_EPS)  (+ a tiny combine)
  2. logits          z_i = -gamma ||f - F_i||^2 -> per-program softmax (max, sum of exp); z kept
  3. loss:           R_s, R_t from z and the combined statistics, sum_i (R_s - R_t)^2 reduced in
                     the kernel, the maps never stored. With a gradient to come it keeps R_s and
                     a = 2 (R_s - R_t), so dz = R_s (a - sum_j R_s[j] a[j]) is exact.
  4. gradient only:  g = sum_i dz_i (F_i - f), the path through f (needs every dz first).
  5. backward:       dF_j = 2 gamma s ((m_j / A) g - dz_j (F_j - f)) / B, s the upstream gradient.
With a gradient the loss reads the student three times and the teacher twice in the forward,
and the student once more (writing its gradient) in the light backward. f needs every pixel
before any logit and the normaliser every logit before any exact dz, so passes 1, 2 and 5 are
the minimum without a grid-wide barrier; pass 4 could fold into pass 2 as online-rescaled sums
(sum R_s^2 (F - f), sum R_s R_t (F - f), ...) but those cancel as the student nears the
teacher, so it stays exact. The logits cost 4 bytes per pixel and map, the features 2C or 4C.
Per-program partials are combined in a fixed order: deterministic, no atomics.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
from torch.autograd.function import once_differentiable

from kernels._dispatch import interpreter_enabled
from kernels.aot import AotSpec
from kernels.relation import AREA_EPS, check_relation_args
from kernels.relation_triton_kernels import (
    _channel_sum_kernel,
    _grad_kernel,
    _logits_kernel,
    _loss_terms_kernel,
    _mean_kernel,
)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

# Tile configurations of the feature-reading kernels, autotuned on CUDA.
CONFIGS = (
    triton.Config({"BLOCK_C": 32, "BLOCK_N": 128}, num_warps=8, num_stages=1),
    triton.Config({"BLOCK_C": 64, "BLOCK_N": 64}, num_warps=8, num_stages=1),
    triton.Config({"BLOCK_C": 128, "BLOCK_N": 32}, num_warps=8, num_stages=1),
)
# The interpreter launches this one config (tests force each of the others in turn).
INTERPRETER_CONFIG = CONFIGS[0]
_TUNE_KEY = ["C", "N", "chunk", "stride_xp"]
_TUNED = {k: triton.autotune(configs=list(CONFIGS), key=_TUNE_KEY)(k) for k in (_channel_sum_kernel, _logits_kernel)}
_TUNED[_grad_kernel] = triton.autotune(configs=list(CONFIGS), key=[*_TUNE_KEY, "stride_gp"])(_grad_kernel)
# The light kernels (per-pixel logits, per-program partials): one fixed config each.
LOSS_TERMS_CONFIG = triton.Config({"BLOCK_N": 256, "BLOCK_P": 64}, num_warps=4, num_stages=1)
MEAN_CONFIG = triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4, num_stages=1)

CHUNK_ALIGN = 64  # pixels per program are a multiple of this
PROGRAMS_PER_SM = 8  # programs launched per SM and kernel, all samples together

_forced_config: triton.Config | None = None
_forced_chunk: int | None = None


@contextlib.contextmanager
def forced_launch(config: triton.Config | None = None, chunk: int | None = None):
    """Launch one given tile config and/or a given number of pixels per program (tests)."""
    global _forced_config, _forced_chunk
    saved = _forced_config, _forced_chunk
    _forced_config, _forced_chunk = config, chunk
    try:
        yield
    finally:
        _forced_config, _forced_chunk = saved


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def split_pixels(n: int, batch: int, device: torch.device) -> tuple[int, int]:
    """(pixels per program, programs per sample): enough programs to fill the GPU at batch 16.

    Under the interpreter a sample gets at most three programs (each runs serially on the CPU),
    which still exercises the combination of per-program partials.
    """
    if _forced_chunk is not None:
        chunk = _forced_chunk
    elif device.type == "cuda":
        per_sample = max(1, triton.cdiv(PROGRAMS_PER_SM * _sm_count(device.index or 0), batch))
        chunk = triton.cdiv(triton.cdiv(n, per_sample), CHUNK_ALIGN) * CHUNK_ALIGN
    else:
        chunk = triton.cdiv(triton.cdiv(n, 3), CHUNK_ALIGN) * CHUNK_ALIGN
    return chunk, triton.cdiv(n, chunk)


def _launch(kernel, grid: tuple[int, ...], *args) -> None:
    """Launch the autotuned kernel, or one fixed config (interpreter, or forced by a test)."""
    config = _forced_config or (INTERPRETER_CONFIG if interpreter_enabled() else None)
    if config is None:
        _TUNED[kernel][grid](*args)
    else:
        kernel[grid](*args, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def pixel_strides(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """(x, stride_b, stride_c, stride_p) with pixel p = h * W + w at p * stride_p.

    NCHW (unit pixel stride) and channels_last (unit channel stride) qualify as they are, views
    included; anything else is copied to NCHW, so the kernels only ever see those two layouts.
    """
    _, _, h, w = x.shape
    sb, sc, sh, sw = x.stride()
    sp = 1 if h * w == 1 else sh if w == 1 else sw
    if (w == 1 or h == 1 or sh == w * sw) and 1 in (sp, sc):
        return x, sb, sc, sp
    x = x.contiguous()
    return x, x.stride(0), x.stride(1), x.stride(3)


class _Features:
    """A (B, C, H, W) map seen as (B, C, N) pixels, with its split into programs."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.sb, self.sc, self.sp = pixel_strides(x)
        self.b, self.c, h, w = x.shape
        self.n = h * w
        self.chunk, self.p = split_pixels(self.n, self.b, x.device)

    def channel_sums(self, weights, center, part=None, wsum=None) -> torch.Tensor:
        """Per-program partials (B, P, C) of sum_i weights[b, i] (x[b, :, i] - center[b]);
        the weights' own partial sums go to `wsum` (B, P)."""
        dev, f32 = self.x.device, torch.float32
        part = torch.empty((self.b, self.p, self.c), device=dev, dtype=f32) if part is None else part
        wsum = torch.empty((self.b, self.p), device=dev, dtype=f32) if wsum is None else wsum
        args = (self.x, weights, center, part, wsum, self.sb, self.sc, self.sp, self.c, self.n, self.chunk)
        _launch(_channel_sum_kernel, (self.b, self.p), *args)
        return part

    def logits(self, f: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, N) and the per-program softmax partials (max, sum of exp), each (B, P)."""
        z = torch.empty((self.b, self.n), device=self.x.device, dtype=torch.float32)
        mx = torch.empty((self.b, self.p), device=self.x.device, dtype=torch.float32)
        se = torch.empty_like(mx)
        args = (self.x, f, z, mx, se, self.sb, self.sc, self.sp, self.c, self.n, self.chunk, -float(gamma))
        _launch(_logits_kernel, (self.b, self.p), *args)
        return z, mx, se

    def grad(self, dz, m, inv_area, f, g, upstream: torch.Tensor, two_gamma: float) -> torch.Tensor:
        """The gradient w.r.t. x (see _grad_kernel), in x's dtype and layout."""
        cl = self.sp != 1  # then the channel stride is 1: write the gradient channels_last too
        out = torch.empty_like(self.x, memory_format=torch.channels_last if cl else torch.contiguous_format)
        out, gb, gc, gp = pixel_strides(out)
        args = (self.x, dz, m, inv_area, f, g, upstream, out, self.sb, self.sc, self.sp, gb, gc, gp)
        _launch(_grad_kernel, (self.b, self.p), *args, self.c, self.n, self.chunk, two_gamma)
        return out


def _foreground_means(maps: list[_Features], m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean feature f of each map, (T, B, C) fp32, and 1 / clamped area (B,)."""
    b, p, c, dev = maps[0].b, maps[0].p, maps[0].c, m.device
    # Zeros: the centre of the masked sums, overwritten with the means once those are summed.
    f = torch.zeros((len(maps), b, c), device=dev, dtype=torch.float32)
    part = torch.empty((len(maps), b, p, c), device=dev, dtype=torch.float32)
    wsum = torch.empty((b, p), device=dev, dtype=torch.float32)  # the same area from every map
    for i, feats in enumerate(maps):
        feats.channel_sums(m, f[i], part[i], wsum)
    inv_area = torch.empty(b, device=dev, dtype=torch.float32)
    cfg = MEAN_CONFIG
    _mean_kernel[(len(maps) * b,)](
        part, wsum, f, inv_area, b, p, c, AREA_EPS,
        **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return f, inv_area


def _features(op: str, feat: torch.Tensor, dtype: torch.dtype) -> _Features:
    """`feat` in the compute dtype, seen as pixels."""
    if dtype not in DTYPES:
        raise ValueError(f"{op}: Triton path supports {[str(d) for d in DTYPES]}, got {dtype}; use impl='reference'")
    if interpreter_enabled() and dtype == torch.bfloat16:
        dtype = torch.float32  # the interpreter has no bf16 arithmetic; bf16 -> fp32 is exact
    return _Features(feat.to(dtype))


def _flat_mask(mask: torch.Tensor) -> torch.Tensor:
    """The mask as (B, N) fp32, contiguous (a view when it already is)."""
    return mask.detach().reshape(mask.shape[0], -1).to(torch.float32).contiguous()


def _softmax(z: torch.Tensor, mx: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
    """Normalise logits (B, N) in place with per-program partials (B, P) into the map."""
    m = mx.amax(dim=1, keepdim=True)
    inv_s = 1.0 / (se * torch.exp(mx - m)).sum(dim=1, keepdim=True)
    return z.sub_(m).exp_().mul_(inv_s)


class _RelationMap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feat: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
        feats = _features("relation_map_triton", feat, feat.dtype)
        m = _flat_mask(mask)
        f, inv_area = _foreground_means([feats], m)
        f = f[0]
        rmap = _softmax(*feats.logits(f, gamma))
        if ctx.needs_input_grad[0]:
            ctx.gamma, ctx.out_dtype = gamma, feat.dtype
            ctx.save_for_backward(feats.x, m, inv_area, f, rmap)
        return rmap

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_map: torch.Tensor):
        x, m, inv_area, f, rmap = ctx.saved_tensors
        with _on_device(x):
            grad = _map_grad(grad_map.float(), _Features(x), m, inv_area, f, rmap, ctx.gamma)
        return grad.to(ctx.out_dtype), None, None


def _map_grad(grad_map, feats: _Features, m, inv_area, f, rmap, gamma: float) -> torch.Tensor:
    """Gradient of <grad_map, R> w.r.t. the features: softmax backward, then the two paths."""
    dz = rmap * (grad_map - (rmap * grad_map).sum(dim=1, keepdim=True))
    g = feats.channel_sums(dz, f).sum(dim=1)
    one = torch.ones(1, device=dz.device, dtype=torch.float32)
    return feats.grad(dz, m, inv_area, f, g, one, 2.0 * gamma)


def _loss_terms(zs, ps, zt, pt, feats: _Features, keep_terms: bool):
    """Launch the loss reduction on the logits; returns (loss, R_s, a, q) (R_s, a, q if kept)."""
    b, n, p = feats.b, feats.n, feats.p
    loss_part = torch.empty((b, p), device=zs.device, dtype=torch.float32)
    q_part = torch.empty_like(loss_part)
    shape = (b, n) if keep_terms else (1,)
    r = torch.empty(shape, device=zs.device, dtype=torch.float32)
    a = torch.empty_like(r)
    cfg = LOSS_TERMS_CONFIG
    _loss_terms_kernel[(b, p)](
        zs, zt, *ps, *pt, loss_part, q_part, r, a, n, p, feats.chunk, 1.0 / b,
        STORE_TERMS=keep_terms, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return loss_part.sum(), r, a, q_part.sum(dim=1)


class _RelationDistillLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, gamma: float):
        op = "relation_distill_loss_triton"
        dtype = torch.promote_types(student.dtype, teacher.dtype)
        fs_, ft_ = _features(op, student, dtype), _features(op, teacher.detach(), dtype)
        m = _flat_mask(mask)
        (fs, ft), inv_area = _foreground_means([fs_, ft_], m)
        zs, *ps = fs_.logits(fs, gamma)
        zt, *pt = ft_.logits(ft, gamma)
        del ft_
        keep = ctx.needs_input_grad[0]
        loss, r, a, q = _loss_terms(zs, ps, zt, pt, fs_, keep)
        if keep:
            dz = a.sub_(q[:, None]).mul_(r)  # dL_b / dz_i, before the 1 / B of the batch mean
            g = fs_.channel_sums(dz, fs).sum(dim=1)
            ctx.gamma, ctx.out_dtype = gamma, student.dtype
            ctx.save_for_backward(fs_.x, dz, m, inv_area, fs, g)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        x, dz, m, inv_area, f, g = ctx.saved_tensors
        with _on_device(x):
            feats = _Features(x)
            upstream = grad_loss.float().reshape(1)
            grad = feats.grad(dz, m, inv_area, f, g, upstream, 2.0 * ctx.gamma / feats.b)
        return grad.to(ctx.out_dtype), None, None, None


def _check(op: str, feat: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    check_relation_args(op, feat, mask, name)
    if feat.numel() == 0:
        raise ValueError(f"{op}: {name} must be non-empty, got shape {tuple(feat.shape)}")
    if not feat.is_cuda and not interpreter_enabled():
        raise ValueError(f"{op}: {name} is on {feat.device}; the Triton kernels need CUDA (or TRITON_INTERPRET=1)")


def _on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def relation_map_triton(feat: torch.Tensor, mask: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """Relation map softmax_i(-gamma ||f - F_i||^2), (B, H*W) fp32, differentiable w.r.t. feat."""
    _check("relation_map_triton", feat, mask, "feat")
    with _on_device(feat):
        return _RelationMap.apply(feat, mask.detach(), float(gamma))


def relation_distill_loss_triton(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, *, gamma: float
) -> torch.Tensor:
    """mean_b sum_i (R_student - R_teacher)^2 as an fp32 scalar; gradient to the student only."""
    op = "relation_distill_loss_triton"
    _check(op, student, mask, "student")
    if tuple(teacher.shape) != tuple(student.shape) or teacher.device != student.device:
        raise ValueError(
            f"{op}: teacher {tuple(teacher.shape)} on {teacher.device} must match student "
            f"{tuple(student.shape)} on {student.device}"
        )
    _check(op, teacher, mask, "teacher")
    with _on_device(student):
        return _RelationDistillLoss.apply(student, teacher.detach(), mask.detach(), float(gamma))


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
