"""Count what an eager PyTorch formulation launches: ops, bytes and FLOPs, on meta tensors.

`trace(fn)` runs `fn` under a dispatch mode that sees every ATen op below autograd, backward
included. Each op that computes (views, aliasing metadata ops and bare allocations are skipped) is one
launch that reads each distinct input tensor and writes each output once from DRAM: the eager
model, where nothing stays in a cache between ops. Broadcast (stride-0) inputs count their
distinct elements only. FLOPs: convolutions and matmuls by torch's own FLOP formulas (tensor-core
work; convolutions counted here, since torch's backward formula ignores `groups`); any other op
one FLOP per element it writes (CUDA-core work, negligible next to its bytes).

On meta tensors nothing is allocated or computed, so full GiftNet shapes (batch 16, 256 px) cost
nothing to trace. One ATen op is at least one CUDA launch; cuDNN may launch a few kernels for one
convolution (a transform, the GEMM, a reduction), so the launch counts are lower bounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


@dataclasses.dataclass
class Launch:
    """One kernel (or `count` identical small ones): DRAM bytes, tensor-core and CUDA-core FLOPs."""

    name: str
    dram: float
    tc_flops: float = 0.0
    simt_flops: float = 0.0
    count: int = 1
    l2: float | None = None  # bytes requested from L2 by the SMs, where the data flow says


def _distinct_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a (possibly broadcast) tensor holds."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return n * t.element_size()


def _tensors(tree) -> list[torch.Tensor]:
    flat, _ = torch.utils._pytree.tree_flatten(tree)
    return [t for t in flat if isinstance(t, torch.Tensor)]


def _is_view(func) -> bool:
    """True for ops that only alias their input (views, detach, t); in-place ops compute."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def _conv_flops(packet, args, out) -> int:
    """2 x multiply-adds of a 2-D convolution, or of the gradients its backward computes.

    aten.convolution_backward(grad_out, input, weight, bias_sizes, stride, padding, dilation,
    transposed, output_padding, groups, output_mask).
    """
    w = args[2] if packet is torch.ops.aten.convolution_backward else args[1]
    taps = w.shape[2] * w.shape[3]
    if packet is torch.ops.aten.convolution:
        return 2 * out.numel() * w.shape[1] * taps
    grad_out, x, groups, output_mask = args[0], args[1], args[9], args[10]
    flops = 0
    if output_mask[0]:  # input gradient: every input element sums C_out / groups x taps terms
        flops += 2 * x.numel() * (w.shape[0] // groups) * taps
    if output_mask[1]:  # weight gradient: every weight element sums over batch x output pixels
        flops += 2 * w.numel() * (grad_out.numel() // grad_out.shape[1])
    return flops


# Allocations without a fill launch no kernel.
_ALLOCATIONS = (torch.ops.aten.empty, torch.ops.aten.empty_like, torch.ops.aten.empty_strided)


class _Tracer(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.launches: list[Launch] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _is_view(func) or func._overloadpacket in _ALLOCATIONS:
            return out
        ins = {id(t): t for t in _tensors((args, kwargs))}
        written = _tensors(out)  # an in-place op's output is its input: read and written
        if not written:  # e.g. aten.promote_types: host-side, no kernel
            return out
        dram = sum(_distinct_bytes(t) for t in ins.values()) + sum(_distinct_bytes(t) for t in written)
        packet = func._overloadpacket
        if packet in (torch.ops.aten.convolution, torch.ops.aten.convolution_backward):
            launch = Launch(str(packet), dram, tc_flops=float(_conv_flops(packet, args, out)))
        elif packet in flop_registry:
            launch = Launch(str(packet), dram, tc_flops=float(flop_registry[packet](*args, **kwargs, out_val=out)))
        else:
            launch = Launch(str(packet), dram, simt_flops=float(sum(t.numel() for t in written)))
        self.launches.append(launch)
        return out


def trace(fn: Callable[[], object]) -> list[Launch]:
    """The launches `fn()` makes (every ATen op that computes), in order."""
    tracer = _Tracer()
    with tracer:
        fn()
    return tracer.launches


def trace_fwd_bwd(
    forward: Callable[[], torch.Tensor], upstream: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[list[Launch], list[Launch]]:
    """(forward launches, backward launches): `forward()` builds the output, then its backward
    runs with the upstream gradient `upstream(out)` (made outside the trace; a scalar needs none)."""
    box: dict[str, torch.Tensor] = {}
    fwd = trace(lambda: box.setdefault("out", forward()))
    out = box["out"]
    grad = upstream(out) if upstream is not None else None
    bwd = trace(lambda: out.backward(grad))
    return fwd, bwd
