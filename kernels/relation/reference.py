"""Relation map and relation-distillation loss: argument checks and the pure-PyTorch references.

    f    = sum_i m_i F_i / sum_i m_i                       (masked mean foreground feature)
    R[i] = softmax_i(-gamma * ||f - F_i||^2)                (over all H*W pixels)
    L    = mean_b sum_i (R_student[b, i] - R_teacher[b, i])^2

Statistics and maps are fp32 whatever the input dtype. An empty mask gives f = 0 (the
division is guarded), so every value stays finite.
"""

from __future__ import annotations

import torch

AREA_EPS = 1e-6


def check_relation_args(op: str, feat: torch.Tensor, mask: torch.Tensor, name: str = "feat") -> None:
    """Raise ValueError naming the offending argument when shapes do not fit together."""
    if feat.dim() != 4:
        raise ValueError(f"{op}: {name} must be (B, C, H, W), got shape {tuple(feat.shape)}")
    b, _, h, w = feat.shape
    if tuple(mask.shape) != (b, 1, h, w):
        raise ValueError(f"{op}: mask must be ({b}, 1, {h}, {w}) to match {name}, got {tuple(mask.shape)}")
    if mask.device != feat.device:
        raise ValueError(f"{op}: mask is on {mask.device} but {name} is on {feat.device}")
    if not feat.is_floating_point() or not mask.is_floating_point():
        raise ValueError(f"{op}: {name} and mask must be floating-point tensors")


def foreground_mean(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked average of feat over the foreground, (B, C) in fp32; zeros for an empty mask."""
    m = mask.float()
    area = m.sum(dim=(2, 3)).clamp_min(AREA_EPS)  # (B, 1)
    return (feat.float() * m).sum(dim=(2, 3)) / area


def relation_map_reference(feat: torch.Tensor, mask: torch.Tensor, *, gamma: float = 0.01) -> torch.Tensor:
    """Pure-PyTorch relation map, (B, H*W) fp32; each row sums to 1."""
    f = foreground_mean(feat, mask)
    dist2 = (feat.float() - f[:, :, None, None]).square().sum(dim=1).flatten(1)
    return torch.softmax(-gamma * dist2, dim=1)


def relation_distill_loss_reference(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, *, gamma: float = 0.01
) -> torch.Tensor:
    """Pure-PyTorch relation-distillation loss: fp32 scalar, no gradient to the teacher."""
    r_student = relation_map_reference(student, mask, gamma=gamma)
    with torch.no_grad():
        r_teacher = relation_map_reference(teacher.detach(), mask, gamma=gamma)
    return (r_student - r_teacher).square().sum(dim=1).mean()
