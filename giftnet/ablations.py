"""The rows of the paper's Table 3 (ablations on iHarmony4) as configurations."""

from __future__ import annotations

import dataclasses

from giftnet.config import ENCODER_SITES, LossConfig, ModelConfig
from giftnet.errors import UsageError

E = ENCODER_SITES


@dataclasses.dataclass(frozen=True)
class Ablation:
    row: int
    description: str
    model: ModelConfig
    loss: LossConfig
    paper_mse: float
    paper_fmse: float
    paper_psnr: float

    # What makes a row a row; the other model and loss settings (widths, init, losses, kernels)
    # are the run's own, so a config file's choices survive --ablation.
    MODEL_FIELDS = ("gift_sites", "guidance")
    LOSS_FIELDS = ("distill", "distill_sites")

    def overrides(self) -> tuple[dict, dict]:
        """The (model, loss) config fields this row sets, as config-file values."""
        model, loss = self.model.to_dict(), self.loss.to_dict()
        return {k: model[k] for k in self.MODEL_FIELDS}, {k: loss[k] for k in self.LOSS_FIELDS}


def _row(row, description, sites, mse, fmse, psnr, guidance="global", distill="none", distill_sites=E):
    return Ablation(
        row,
        description,
        ModelConfig(gift_sites=sites, guidance=guidance),
        LossConfig(distill=distill, distill_sites=distill_sites if distill != "none" else ()),
        mse,
        fmse,
        psnr,
    )


TABLE3: dict[int, Ablation] = {
    a.row: a
    for a in (
        _row(1, "iSSAM backbone, no GIFT, no distillation", (), 24.64, 262.67, 37.95),
        _row(2, "GIFT at D3", ("D3",), 21.39, 243.23, 38.71),
        _row(3, "GIFT at D2, D3", ("D2", "D3"), 20.82, 238.89, 38.76),
        _row(4, "GIFT at D1, D2, D3", ("D1", "D2", "D3"), 20.79, 237.06, 38.78),
        _row(5, "GIFT at D2, D3 and E1-E4", ("D2", "D3", *E), 20.50, 236.22, 38.77),
        _row(6, "GIFT at D3 without guidance (learned constant scales)", ("D3",), 24.33, 263.22, 38.18, "none"),
        _row(7, "GIFT at D3 guided by its own pooled map", ("D3",), 24.21, 261.15, 38.28, "self"),
        _row(8, "GiftNet: GIFT at D2, D3, E + relation distillation on E", ("D2", "D3", *E), 19.46, 225.30, 38.92,
             distill="relation"),
        _row(9, "relation distillation on D2, D3 and E", ("D2", "D3", *E), 21.31, 242.58, 38.73,
             distill="relation", distill_sites=("D2", "D3", *E)),
        _row(10, "feature distillation on E instead of relation", ("D2", "D3", *E), 21.58, 240.18, 38.67,
             distill="feature"),
    )
}  # fmt: skip


def ablation(row: int) -> Ablation:
    if row not in TABLE3:
        raise UsageError(f"--ablation: Table 3 has rows 1-10, got {row}")
    return TABLE3[row]
