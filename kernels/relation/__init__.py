"""Foreground-background relation maps and the relation-distillation loss (paper eq. 3).

    f    = sum_i m_i F_i / sum_i m_i                       (masked mean foreground feature)
    R[i] = softmax_i(-gamma * ||f - F_i||^2)                (over all H*W pixels)
    L    = mean_b sum_i (R_student[b, i] - R_teacher[b, i])^2

Files as in every kernel op package (see giftnet.kernels.masked_modconv): __init__ (public ops),
reference, jit, launch, autograd, aot; and the loss's own kernels and launcher, jit_loss and
launch_loss.
"""

from __future__ import annotations

import torch

from giftnet.kernels._dispatch import register_aot_specs, resolve_impl, triton_installed
from giftnet.kernels.relation.reference import (
    AREA_EPS,
    check_relation_args,
    foreground_mean,
    relation_distill_loss_reference,
    relation_map_reference,
)

__all__ = [
    "AREA_EPS",
    "check_relation_args",
    "foreground_mean",
    "relation_distill_loss",
    "relation_distill_loss_reference",
    "relation_map",
    "relation_map_reference",
]


def relation_map(feat: torch.Tensor, mask: torch.Tensor, *, gamma: float = 0.01, impl: str = "auto") -> torch.Tensor:
    """Softmax over pixels of -gamma * ||f - F_i||^2; returns (B, H*W) fp32.

    feat: (B, C, H, W); mask: (B, 1, H, W) in [0, 1] at the same size as feat.
    """
    check_relation_args("relation_map", feat, mask)
    if resolve_impl("relation_map", impl, feat, mask) == "triton":
        from giftnet.kernels.relation.autograd import relation_map_triton  # imports triton: only when used

        return relation_map_triton(feat, mask.detach(), gamma=gamma)
    return relation_map_reference(feat, mask.detach(), gamma=gamma)


def relation_distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 0.01,
    impl: str = "auto",
) -> torch.Tensor:
    """Mean over the batch of sum_i (R_student - R_teacher)^2: an fp32 scalar.

    Gradients reach the student only; the teacher (the frozen reconstruction branch) and the
    mask are constants.
    """
    op = "relation_distill_loss"
    check_relation_args(op, student, mask, "student")
    if tuple(teacher.shape) != tuple(student.shape):
        raise ValueError(f"{op}: teacher shape {tuple(teacher.shape)} must equal student shape {tuple(student.shape)}")
    if teacher.device != student.device:
        raise ValueError(f"{op}: teacher is on {teacher.device} but student is on {student.device}")
    if resolve_impl(op, impl, student, teacher, mask) == "triton":
        from giftnet.kernels.relation.autograd import relation_distill_loss_triton

        return relation_distill_loss_triton(student, teacher.detach(), mask.detach(), gamma=gamma)
    return relation_distill_loss_reference(student, teacher.detach(), mask.detach(), gamma=gamma)


def _aot_specs() -> list:
    from giftnet.kernels.relation.aot import aot_specs

    return aot_specs()


register_aot_specs("relation", _aot_specs)

if triton_installed():
    # Registers the torch custom ops now, not at the first call: a torch.compile that traces the
    # first call must find them (an import inside a traced function could break the graph).
    from giftnet.kernels.relation import autograd as _autograd  # noqa: F401
