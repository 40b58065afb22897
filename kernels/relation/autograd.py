"""Autograd of the relation map and the relation-distillation loss, and their Triton entry points.

The map's passes and launchers are in giftnet.kernels.relation.launch, the loss's five launches in
giftnet.kernels.relation.launch_loss and giftnet.kernels.relation.jit_loss (see their docstrings)."""

from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable

from giftnet.kernels._dispatch import interpreter_enabled
from giftnet.kernels.relation.launch import (
    _Features,
    _features,
    _flat_mask,
    _foreground_means,
    _softmax,
)
from giftnet.kernels.relation.launch_loss import loss_forward
from giftnet.kernels.relation.reference import check_relation_args


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


# The loss (what training calls) is a pair of torch custom ops, forward and backward, so
# torch.compile of the whole model sees one opaque node with a fake implementation: no graph
# break, and the launch code is never traced.
@torch.library.custom_op("giftnet::relation_distill_loss", mutates_args=())
def _loss_op(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, gamma: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, terms, q, inv_area, f, g): the loss and, with need_grad, what the backward needs
    (giftnet.kernels.relation.launch_loss.loss_forward; else empty). Four launches."""
    op = "relation_distill_loss_triton"
    with _on_device(student):
        dtype = torch.promote_types(student.dtype, teacher.dtype)
        fs, ft = _features(op, student, dtype), _features(op, teacher.detach(), dtype)
        loss, terms, q, inv_area, f, g = loss_forward(fs, ft, _flat_mask(mask), gamma, need_grad)
        if not need_grad:
            empty = torch.empty(0, device=student.device)
            return loss, empty, empty.clone(), empty.clone(), empty.clone(), empty.clone()
        return loss, terms, q, inv_area, f, g


@_loss_op.register_fake
def _(student, teacher, mask, gamma, need_grad):
    b, c, h, w = student.shape
    new = student.new_empty
    f32 = torch.float32
    if not need_grad:
        return new((), dtype=f32), *(new(0, dtype=f32) for _ in range(5))
    return (
        new((), dtype=f32),
        new((2, b, h * w), dtype=f32),
        new((b,), dtype=f32),
        new((b,), dtype=f32),
        new((b, c), dtype=f32),
        new((b, c), dtype=f32),
    )


@torch.library.custom_op("giftnet::relation_distill_loss_backward", mutates_args=())
def _loss_backward_op(
    grad_loss: torch.Tensor,
    student: torch.Tensor,
    mask: torch.Tensor,
    terms: torch.Tensor,
    q: torch.Tensor,
    inv_area: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    gamma: float,
    compute_dtype: torch.dtype,
) -> torch.Tensor:
    """The student's gradient, in its dtype and layout family: one launch."""
    with _on_device(student):
        feats = _features("relation_distill_loss_triton", student.detach(), compute_dtype)
        upstream = grad_loss.float().reshape(1)
        coef = 2.0 * gamma / feats.b
        return feats.grad(terms[0], _flat_mask(mask), inv_area, f, g, upstream, coef, terms[1], q).to(student.dtype)


@_loss_backward_op.register_fake
def _(grad_loss, student, mask, terms, q, inv_area, f, g, gamma, compute_dtype):
    cl = student.is_contiguous(memory_format=torch.channels_last) and not student.is_contiguous()
    return torch.empty_like(student, memory_format=torch.channels_last if cl else torch.contiguous_format)


def _loss_setup_context(ctx, inputs, output) -> None:
    student, teacher, mask, gamma, _ = inputs
    _, terms, q, inv_area, f, g = output
    ctx.save_for_backward(student, mask, terms, q, inv_area, f, g)
    ctx.gamma, ctx.compute_dtype = gamma, torch.promote_types(student.dtype, teacher.dtype)


def _loss_backward(ctx, grad_loss, *_unused):
    student, mask, terms, q, inv_area, f, g = ctx.saved_tensors
    if terms.numel() == 0:
        raise RuntimeError("relation_distill_loss: backward through a loss computed without need_grad")
    grad = _loss_backward_op(grad_loss, student, mask, terms, q, inv_area, f, g, ctx.gamma, ctx.compute_dtype)
    return grad, None, None, None, None


_loss_op.register_autograd(_loss_backward, setup_context=_loss_setup_context)


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
    need_grad = student.requires_grad and torch.is_grad_enabled()
    return _loss_op(student, teacher.detach(), mask.detach(), float(gamma), need_grad)[0]
