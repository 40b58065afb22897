"""Bytes, FLOPs and launches per call of each kernel and baseline at the GiftNet sites: estimates.

Nothing here runs on a GPU. Two kinds of rows:

- traced (eager baselines): the formulation runs on meta tensors at the real shape and every
  ATen op is counted (giftnet.bench.sites_trace): exact op counts, the eager DRAM model (each op reads
  its inputs and writes its outputs once), torch's FLOP formulas;
- modelled (our Triton kernels as written in kernels/ at this revision, torch.compile, ideal
  rooflines): the data flow written out by hand below, pass by pass, with the assumptions named.

A "feature pass" is one read or write of a (B, C, H, W) map. Times come from a roofline per
launch, max(DRAM bytes / bandwidth, tensor FLOPs / tensor peak, other FLOPs / FP32 peak,
launch floor), summed over launches: a lower bound that ignores L2 and latency effects.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from giftnet.backbone import encoder_channels
from giftnet.bench.sites_trace import Launch, trace_fwd_bwd

BATCH = 16
IMAGE = 256


def site_shapes(base: int = 32, image: int = IMAGE) -> dict[str, tuple[int, int]]:
    """Site -> (channels, side) of the GIFT sites: E1-E4 are the encoder blocks (pre-pool), D2/D3
    the outputs of the second and third up blocks (giftnet.backbone)."""
    e = encoder_channels(base)
    enc = {f"E{i + 1}": (e[i], image >> i) for i in range(4)}
    return enc | {"D2": (e[1], image >> 1), "D3": (e[0], image)}


RELATION_SITES = ("E1", "E2", "E3", "E4")  # relation distillation runs on the encoder maps


@dataclasses.dataclass(frozen=True)
class Gpu:
    """Peak figures from the vendors' specifications (dense, no sparsity)."""

    name: str
    dram_gbps: float
    tc_tflops: float  # bf16 tensor cores, fp32 accumulate
    fp32_tflops: float  # CUDA cores
    sms: int
    l2_mb: float
    source: str


GPUS = (
    Gpu("RTX 3090", 936.0, 71.0, 35.6, 82, 6.0, "NVIDIA GA102 whitepaper: GDDR6X 936 GB/s; BF16/FP16 tensor "
        "71 TFLOP/s dense with FP32 accumulate (142 with FP16 accumulate); FP32 35.6 TFLOP/s; L2 6 MB"),
    Gpu("H200 SXM", 4800.0, 989.0, 67.0, 132, 50.0, "NVIDIA H200 datasheet: HBM3e 4.8 TB/s; BF16 tensor 989 "
        "TFLOP/s dense (1979 with sparsity); FP32 67 TFLOP/s; L2 as H100 SXM (50 MB)"),
)  # fmt: skip
LAUNCH_FLOOR_US = 3.0  # assumed GPU time of the smallest launch when the CPU keeps the queue full


def launch_us(launch: Launch, gpu: Gpu, floor_us: float = LAUNCH_FLOOR_US) -> float:
    """Roofline time of one launch (times its count) in microseconds."""
    t = max(
        launch.dram / (gpu.dram_gbps * 1e3),
        launch.tc_flops / (gpu.tc_tflops * 1e6),
        launch.simt_flops / (gpu.fp32_tflops * 1e6),
        floor_us,
    )
    return t * launch.count


def total(launches: list[Launch], gpu: Gpu | None = None) -> dict[str, float]:
    """Sums over launches: DRAM bytes, FLOPs, launch count, L2 requests, and time on `gpu`."""
    out = {
        "dram": sum(x.dram * x.count for x in launches),
        "tc_flops": sum(x.tc_flops * x.count for x in launches),
        "simt_flops": sum(x.simt_flops * x.count for x in launches),
        "launches": sum(x.count for x in launches),
    }
    l2 = [x.l2 * x.count for x in launches if x.l2 is not None]
    out["l2"] = sum(l2) if l2 else math.nan
    if gpu is not None:
        out["us"] = sum(launch_us(x, gpu) for x in launches)
        # time spent in launches too small to reach any roofline (the floor decides them)
        out["floor_us"] = sum(launch_us(x, gpu) for x in launches if launch_us(x, gpu, 0.0) < LAUNCH_FLOOR_US * x.count)
    return out


@dataclasses.dataclass(frozen=True)
class Shape:
    """One call at a site: batch, channels, side, feature element bytes (bf16: 2)."""

    b: int
    c: int
    side: int
    e: int = 2

    @property
    def p(self) -> int:
        return self.side * self.side

    @property
    def feat(self) -> int:  # one feature pass
        return self.b * self.c * self.p * self.e

    @property
    def mask(self) -> int:  # the mask in the feature dtype (giftnet.gift casts it)
        return self.b * self.p * self.e

    @property
    def conv_flops(self) -> int:  # one 3x3 convolution, C -> C
        return 2 * self.b * self.p * self.c * self.c * 9


# --- masked modulated convolution ----------------------------------------------------------------


# The tile each of today's kernels is meant to run at C (the autotuner decides on the GPU; these
# are the configs of kernels/masked_modconv/launch.py that fit that width).
def fwd_tile(c: int) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_W, BLOCK_O) of conv3x3_scale_blend_kernel."""
    return (8, 8, 32) if c <= 32 else (8, 8, 64) if c <= 64 else (8, 16, 64)


def grad_tile(c: int) -> tuple[int, int, int, int]:
    """(BLOCK_O, BLOCK_I, BLOCK_H, BLOCK_W) of weight_style_partials_kernel (BLOCK_H x BLOCK_W: its pixel step)."""
    return (32, 32, 8, 8) if c <= 32 else (64, 64, 4, 8)


def tile_name(h: int, w: int) -> str:
    """The giftnet.bench.sites_masks name of an h x w pixel tile."""
    return f"{h}x{w}"


def grad_slots(s: Shape, sms: int) -> tuple[int, int]:
    """giftnet.kernels.masked_modconv.launch_grads.choose_slots, restated: (slots, row bands per sample)."""
    want = -(-4 * sms // (9 * (-(-s.c // 64)) ** 2))
    want = max(1, min(want, (64 << 20) // (9 * s.c * s.c * 4)))
    if want <= s.b:
        group = -(-s.b // want)
        return -(-s.b // group), 1
    bands = max(1, min(-(-want // s.b), s.p // 1024))
    rows = math.ceil(math.ceil(s.side / bands) / 16) * 16  # bands of whole multiples of 16 rows
    bands = math.ceil(s.side / rows)
    return s.b * bands, bands


def _conv_blend(s: Shape, name: str, fg: float = 1.0) -> Launch:
    """conv3x3_scale_blend_kernel: reads inp and mask, re-reads inp as the residual, writes out.

    DRAM: inp once (the residual tile was just loaded as the centre tap, assumed an L2 hit), the
    mask, the output. L2 requests: each program loads its BLOCK_H x BLOCK_W pixels x all C input
    channels (and the mask) once per tap, so the input is requested 9 x (C / BLOCK_O) times.
    `fg` < 1: the fraction of pixel tiles that are not skipped (skipped ones only copy inp to out).
    """
    th, tw, bo = fwd_tile(s.c)
    bp = th * tw
    n_o = -(-s.c // bo)
    programs = s.b * -(-s.p // bp) * n_o
    l2 = fg * (9 * n_o * (s.feat + s.mask) + programs * 9 * s.c * bo * s.e) + s.feat + n_o * s.mask
    simt = fg * 2 * 9 * n_o * s.b * s.c * s.p  # a * m * s on every loaded input element, in fp32
    return Launch(name, 2 * s.feat + s.mask, tc_flops=fg * s.conv_flops, simt_flops=simt, l2=l2)


def _weight_style_grads(s: Shape, sms: int, fg: float = 1.0) -> list[Launch]:
    """weight_style_partials_kernel + weight_style_finalize_kernel (kernels/masked_modconv/jit_grads.py);
    `fg`: the fraction of the partials kernel's pixel steps that are not skipped (a skipped step loads nothing).

    Partials: reads dy, x (once from DRAM; the other channel tiles' and taps' re-reads are L2
    requests) and the mask; writes the dW partials (slots, 9, C, C) fp32 and the t and dstyle
    partials (B, bands, 9, C / 64, C) fp32 each. Finalize: reads those and the weight, writes
    dW (fp32) and dstyle (the style's dtype). Per sample and program the G tile is folded into
    the partials: about 8 FLOPs per G element, on the CUDA cores.
    """
    bo, bi, _, _ = grad_tile(s.c)
    n_o, n_i = -(-s.c // bo), -(-s.c // bi)
    slots, bands = grad_slots(s, sms)
    w32 = 9 * s.c * s.c * 4
    dw_part = slots * w32
    ts_part = s.b * bands * 9 * (n_i + n_o) * s.c * 4
    l2 = fg * (9 * n_i * s.feat + 9 * n_o * s.feat + 2 * 9 * n_o * n_i * s.mask) + dw_part + ts_part
    partials = Launch(
        "weight_style_partials",
        fg * 2 * s.feat + s.mask + w32 + dw_part + ts_part,
        tc_flops=fg * s.conv_flops,
        simt_flops=8 * s.b * bands * 9 * s.c * s.c,
        l2=l2,
    )
    fin_bytes = dw_part + ts_part + 2 * w32 + w32 + s.b * s.c * s.e
    finalize = Launch("weight_style_finalize", fin_bytes, simt_flops=dw_part / 4 + 4 * s.b * 9 * s.c * s.c)
    return [partials, finalize]


# Small torch ops around today's Triton modconv (counted in kernels/masked_modconv/autograd.py):
# forward: style.float(), demodulation (square, sum, square, mm, add, rsqrt), weight packing
# (to(bf16), contiguous copy); backward: style.float() and the transposed packing (to, flip,
# copy); the demodulation is the forward's, saved. dW and dstyle are written in their dtypes by
# the finalize.
MODCONV_GLUE_FWD = 9
MODCONV_GLUE_BWD = 4


def modconv_triton(
    s: Shape, gpu: Gpu, fg: float = 1.0, fg_corr: float | None = None
) -> tuple[list[Launch], list[Launch]]:
    """Today's Triton path (kernels/masked_modconv): fwd 1 big kernel, bwd 3 (dx, the weight/style
    partials, their finalize); `fg` and `fg_corr`: the live (not all-background) share of the
    conv's tiles and of the partials kernel's pixel steps."""
    wbytes = s.c * s.c * 9 * 4
    fwd = [Launch("glue (fwd)", 2 * wbytes, count=MODCONV_GLUE_FWD), _conv_blend(s, "conv3x3_scale_blend", fg)]
    bwd = [Launch("glue (bwd)", 2 * wbytes, count=MODCONV_GLUE_BWD), _conv_blend(s, "dx conv3x3_scale_blend", fg)]
    bwd += _weight_style_grads(s, gpu.sms, fg if fg_corr is None else fg_corr)
    return fwd, bwd


def _modconv_inputs(s: Shape):
    dt, dev = torch.bfloat16, "meta"
    x = torch.empty(s.b, s.c, s.side, s.side, device=dev, dtype=dt, requires_grad=True)
    w = torch.empty(s.c, s.c, 3, 3, device=dev, requires_grad=True)
    st = torch.empty(s.b, s.c, device=dev, dtype=dt, requires_grad=True)
    m = torch.empty(s.b, 1, s.side, s.side, device=dev, dtype=dt)
    return x, w, st, m


def modconv_traced(s: Shape, formulation: str) -> tuple[list[Launch], list[Launch]]:
    """Eager baselines traced at the real shape: "eager" (scale-conv-scale, the library
    reference), "grouped" (per-sample weights, one grouped conv), "cudnn" (a plain 3x3 conv)."""
    from giftnet.bench.sites_mirror import masked_modconv2d_grouped
    from giftnet.kernels.masked_modconv import masked_modconv2d_reference

    x, w, st, m = _modconv_inputs(s)
    fns = {
        "eager": lambda: masked_modconv2d_reference(x, w, st, m),
        "grouped": lambda: masked_modconv2d_grouped(x, w, st, m),
        "cudnn": lambda: F.conv2d(x, w.to(x.dtype), padding=1),
    }
    return trace_fwd_bwd(fns[formulation], torch.empty_like)


def modconv_compile(s: Shape) -> tuple[list[Launch], list[Launch]]:
    """torch.compile of the reference, modelled: Inductor fuses every elementwise run between the
    two cuDNN convolutions, so one kernel per run, each distinct tensor read once.

    fwd: xs = x m s (read x, m; write xs) | conv (read xs; write u) | m d u + (1 - m) x (read u,
    m, x; write y) + a tiny kernel for d. bwd: g = dy m d with the d-gradient sum of dy m u
    (read dy, m, u; write g) | recompute xs (read x, m; write xs) | dgrad (read g; write dxs) |
    wgrad (read g, xs) | dx = dxs m s + (1 - m) dy with the s-gradient sum of dxs x m (read dxs,
    dy, x, m; write dx) + about 4 tiny kernels for the weight and style chains.
    """
    f, mk, q = s.feat, s.mask, s.conv_flops
    fwd = [
        Launch("fused x*m*s", 2 * f + mk),
        Launch("cudnn conv", 2 * f, tc_flops=q),
        Launch("fused blend", 3 * f + mk),
        Launch("demod (tiny)", s.c * s.c * 9 * 8, count=2),
    ]
    bwd = [
        Launch("fused dy*m*d (+dd sum)", 3 * f + mk),
        Launch("recompute x*m*s", 2 * f + mk),
        Launch("cudnn dgrad", 2 * f, tc_flops=q),
        Launch("cudnn wgrad", 2 * f, tc_flops=q),
        Launch("fused dx (+ds sum)", 4 * f + mk),
        Launch("weight/style chain (tiny)", s.c * s.c * 9 * 8, count=4),
    ]
    return fwd, bwd


def modconv_ideal(s: Shape) -> tuple[list[Launch], list[Launch]]:
    """The floor for any implementation: fwd reads x, m and writes y; bwd reads dy, x, m once
    and writes dx (dW and dstyle from the same tiles); all three convolutions' FLOPs."""
    q = s.conv_flops
    return [Launch("ideal fwd", 2 * s.feat + s.mask, tc_flops=q)], [
        Launch("ideal bwd", 3 * s.feat + s.mask, tc_flops=2 * q)
    ]


# --- relation distillation loss ------------------------------------------------------------------


def relation_triton(s: Shape) -> tuple[list[Launch], list[Launch]]:
    """Today's Triton loss (kernels/relation: launch_loss, jit_loss), fwd with the gradient kept, and bwd.

    fwd, 4 launches: masked sums of both maps (read F, T, m) | logits of both maps (read F, T;
    write z of both) | loss terms (read z of both and F; write R_s and a) | finalize (partials).
    bwd, 1 launch: read F, R_s, a, m; write dF. Student 3 + 1 reads, teacher 2, dF written: 7.
    The mask is converted to fp32 once (free when it already is: counted as a copy here).
    """
    f, z, m32 = s.feat, s.b * s.p * 4, s.b * s.p * 4
    cp = 1 << max(0, s.c - 1).bit_length()
    parts = s.b * -(-s.p // 64) * cp * 4  # per-program (B, P, C) fp32 partials, at most
    fwd = [
        Launch("mask to fp32", s.mask + m32),
        Launch("pair sums (student, teacher)", 2 * f + m32 + 2 * parts, simt_flops=4 * s.b * s.c * s.p),
        Launch("pair logits (both maps)", 2 * f + 2 * z, simt_flops=6 * s.b * s.c * s.p),
        Launch("loss terms (+ u, v partials)", f + 2 * z + 2 * z + 2 * parts, simt_flops=4 * s.b * s.c * s.p),
        Launch("finalize", 2 * parts),
    ]
    bwd = [Launch("grad (dz = R_s (a - q) formed)", 2 * f + 3 * z, simt_flops=5 * s.b * s.c * s.p)]
    return fwd, bwd


def relation_traced(s: Shape) -> tuple[list[Launch], list[Launch]]:
    """The eager reference loss (giftnet.kernels.relation), student gradient only, traced at the real shape."""
    from giftnet.kernels.relation import relation_distill_loss_reference

    dev = "meta"
    stu = torch.empty(s.b, s.c, s.side, s.side, device=dev, dtype=torch.bfloat16, requires_grad=True)
    tea = torch.empty(s.b, s.c, s.side, s.side, device=dev, dtype=torch.bfloat16)
    m = torch.empty(s.b, 1, s.side, s.side, device=dev)
    return trace_fwd_bwd(lambda: relation_distill_loss_reference(stu, tea, m))


def relation_compile(s: Shape) -> tuple[list[Launch], list[Launch]]:
    """torch.compile of the reference, modelled: per map a masked-sum reduction (read F) and a
    distance reduction over C (read F, write z), a softmax over pixels (read z twice), the loss;
    bwd: softmax backward on z-sized data, the f-path sum (read F) and the gradient (read F,
    write dF). Seven feature passes, like ours, and about 12 launches."""
    f, z = s.feat, s.b * s.p * 4
    fwd = [
        Launch("masked sums", f + z, count=2),
        Launch("distance", f + z, count=2),
        Launch("softmax", 3 * z, count=2),
        Launch("loss", 2 * z),
    ]
    bwd = [
        Launch("softmax bwd", 4 * z, count=2),
        Launch("f-path sum", f + z),
        Launch("grad", 2 * f + 2 * z),
        Launch("tiny", s.b * s.c * 8, count=2),
    ]
    return fwd, bwd


def relation_ideal(s: Shape) -> tuple[list[Launch], list[Launch]]:
    """The 3-pass roofline: student and teacher read once, the student gradient written once."""
    return [Launch("ideal fwd", 2 * s.feat + s.b * s.p * 4)], [Launch("ideal bwd", s.feat)]
