"""Relation map in Triton (forward and backward), and the feature views and backward launch the loss shares.

Kernels (giftnet.kernels.relation.jit) over a (B, P) grid, P programs per sample, each on one chunk of
pixels; per sample:
  1. masked sums     sum_i m_i F_i, sum_i m_i   -> f = sum / max(area, AREA_EPS)  (+ a tiny combine)
  2. logits          z_i = -gamma ||f - F_i||^2 -> per-program softmax (max, sum of exp); z kept,
                     normalised into the map by torch
  3. backward:       dz from the map, g = sum_i dz_i (F_i - f) (the path through f), then
                     dF_j = 2 gamma ((m_j / A) g - dz_j (F_j - f)) (_grad_kernel)
The loss has its own five launches (giftnet.kernels.relation.launch_loss, giftnet.kernels.relation.jit_loss)
and shares _grad_kernel, which there forms dz = R_s (a - q) itself (FROM_TERMS). The logits
cost 4 bytes per pixel and map, the features 2C or 4C. Per-program partials are combined in a
fixed order: deterministic, no atomics.
"""

from __future__ import annotations

import functools

import torch
import triton

from giftnet.kernels._dispatch import autotuned, forced_param, interpreter_enabled, launch
from giftnet.kernels.relation.jit import (
    _channel_sum_kernel,
    _grad_kernel,
    _logits_kernel,
    _mean_kernel,
)
from giftnet.kernels.relation.reference import AREA_EPS

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
# Keyed on the channel count and layout, not the image size (a new size must not re-tune);
# configs with a channel tile wider than C are pruned; deterministic mode pins one.
_TUNE_KEY = ["C", "stride_xp"]
_TILES = ("BLOCK_C",)
_TUNED = {k: autotuned(k, CONFIGS, _TUNE_KEY, _TILES) for k in (_channel_sum_kernel, _logits_kernel)}
_TUNED[_grad_kernel] = autotuned(_grad_kernel, CONFIGS, [*_TUNE_KEY, "stride_gp"], _TILES)
# The light kernel (combining per-program partials): one fixed config.
MEAN_CONFIG = triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4, num_stages=1)

CHUNK_ALIGN = 64  # pixels per program are a multiple of this
PROGRAMS_PER_SM = 8  # programs launched per SM and kernel, all samples together


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def split_pixels(n: int, batch: int, device: torch.device) -> tuple[int, int]:
    """(pixels per program, programs per sample): enough programs to fill the GPU at batch 16.

    Under the interpreter a sample gets at most three programs (each runs serially on the CPU),
    which still exercises the combination of per-program partials.
    """
    if forced_param("chunk") is not None:  # tests: giftnet.kernels._dispatch.forced_launch(chunk=...)
        chunk = forced_param("chunk")
    elif device.type == "cuda":
        per_sample = max(1, triton.cdiv(PROGRAMS_PER_SM * _sm_count(device.index or 0), batch))
        chunk = triton.cdiv(triton.cdiv(n, per_sample), CHUNK_ALIGN) * CHUNK_ALIGN
    else:
        chunk = triton.cdiv(triton.cdiv(n, 3), CHUNK_ALIGN) * CHUNK_ALIGN
    return chunk, triton.cdiv(n, chunk)


def _launch(kernel, grid: tuple[int, ...], channels: int, *args, **kwargs) -> None:
    """Launch a feature-reading kernel over `channels` channels (giftnet.kernels._dispatch.launch)."""
    launch(
        kernel, _TUNED[kernel], lambda meta: grid, *args,
        interpreter_config=INTERPRETER_CONFIG, channels=channels, tile_keys=_TILES, **kwargs,
    )  # fmt: skip


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
        _launch(_channel_sum_kernel, (self.b, self.p), self.c, *args)
        return part

    def logits(self, f: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, N) and the per-program softmax partials (max, sum of exp), each (B, P)."""
        z = torch.empty((self.b, self.n), device=self.x.device, dtype=torch.float32)
        mx = torch.empty((self.b, self.p), device=self.x.device, dtype=torch.float32)
        se = torch.empty_like(mx)
        args = (self.x, f, z, mx, se, self.sb, self.sc, self.sp, self.c, self.n, self.chunk, -float(gamma))
        _launch(_logits_kernel, (self.b, self.p), self.c, *args)
        return z, mx, se

    def grad(self, dz, m, inv_area, f, g, upstream: torch.Tensor, two_gamma: float, a=None, q=None) -> torch.Tensor:
        """The gradient w.r.t. x (see _grad_kernel), in x's dtype and layout; with `a` and `q`
        (the loss), `dz` holds R_s and the kernel forms dz = R_s (a - q) itself."""
        cl = self.sp != 1  # then the channel stride is 1: write the gradient channels_last too
        out = torch.empty_like(self.x, memory_format=torch.channels_last if cl else torch.contiguous_format)
        out, gb, gc, gp = pixel_strides(out)
        terms = a is not None
        a, q = (a, q) if terms else (dz, inv_area)  # not read without FROM_TERMS
        args = (self.x, dz, m, inv_area, f, g, upstream, a, q, out, self.sb, self.sc, self.sp, gb, gc, gp)
        sizes = (self.c, self.n, self.chunk, two_gamma)
        _launch(_grad_kernel, (self.b, self.p), self.c, *args, *sizes, FROM_TERMS=terms)
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
