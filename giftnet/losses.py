"""Training losses: harmonization (L1 or foreground-normalised MSE) plus distillation (eq. 4).

`total_loss` returns a dict of its components ("total", "har", "dis", "dis_E1", ...) so each
can be logged; only "total" is meant for backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from giftnet.config import LossConfig
from giftnet.gift import resize_mask
from giftnet.kernels import relation_distill_loss


def harmonization_loss(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """L_har between the harmonised and the real image (both in the network's normalised space)."""
    pred, real = pred.float(), real.float()
    if cfg.harmonization == "l1":
        return F.l1_loss(pred, real)
    # iSSAM's foreground-normalised MSE: per sample SSE / (C * max(foreground area, min_area)).
    sse = (pred - real).square().sum(dim=(1, 2, 3))
    area = mask.float().sum(dim=(1, 2, 3)).clamp_min(cfg.fn_mse_min_area)
    return (sse / (pred.shape[1] * area)).mean()


def distillation_losses(
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    mask: torch.Tensor,
    cfg: LossConfig,
) -> dict[str, torch.Tensor]:
    """L_dis per site: relation distillation (paper) or feature distillation (Table 3 row 10)."""
    losses: dict[str, torch.Tensor] = {}
    for site in cfg.distill_sites:
        s, t = student[site], teacher[site].detach()
        if cfg.distill == "relation":
            m = resize_mask(mask.float(), s.shape[-2:])
            losses[site] = relation_distill_loss(s, t, m, gamma=cfg.gamma, impl=cfg.relation_impl)
        else:
            losses[site] = F.mse_loss(s.float(), t.float())
    return losses


def total_loss(
    output: dict[str, torch.Tensor],
    real: torch.Tensor,
    mask: torch.Tensor,
    cfg: LossConfig,
    teacher: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """L = L_har + distill_weight * sum_l L_dis^l, with every component in the returned dict."""
    har = harmonization_loss(output["images"], real, mask, cfg)
    parts = {"har": har}
    total = har
    if cfg.uses_teacher:
        if teacher is None:
            raise ValueError("total_loss: the loss config distils, so the teacher's features are needed")
        dis = distillation_losses(output, teacher, mask, cfg)
        dis_sum = torch.stack(list(dis.values())).sum()
        parts["dis"] = dis_sum
        parts.update({f"dis_{site}": v for site, v in dis.items()})
        total = total + cfg.distill_weight * dis_sum
    return {"total": total, **parts}
