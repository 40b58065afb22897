"""The trainer's typed configuration: the paper's recipe, the CPU demo profile, CLI and JSON.

Precedence: profile defaults < JSON config file (--config) < command-line flags. The resolved
config is written to RUN/config.json; --resume reads it back from there.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from giftnet.choices import (
    BACKENDS,
    DEVICES,
    OPTIMIZERS,
    PRECISIONS,
    STAGES,
    STUDENT_INITS,
    Backend,
    Device,
    Optimizer,
    Precision,
    Stage,
    StudentInit,
)
from giftnet.config import LossConfig, ModelConfig
from giftnet.errors import ConfigError
from giftnet.fields import from_dict, option

__all__ = ["BACKENDS", "DEMO_PROFILE", "OPTIMIZERS", "PRECISIONS", "STAGES", "TrainConfig"]


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs. Defaults are the paper's recipe; each field is one flag of train.py."""

    data: str | None = option(None, help="iHarmony4-layout dataset root (default: the built-in demo dataset)")
    subsets: tuple[str, ...] = option((), help="subset folders under --data (default: all with a train list)")
    out: str = option("runs/giftnet", help="run folder (checkpoints, logs, exported weights)")
    stage: Stage = option("all", help="all = reconstruction branch, then harmonization branch")
    epochs: int = option(120, help="epochs of the harmonization branch (paper: 120)")
    teacher_epochs: int | None = option(None, help="epochs of the reconstruction branch (default: --epochs)")
    milestones: tuple[int, ...] | None = option(
        None, help="epochs where lr drops x0.1 (default: 105/120 and 115/120 of --epochs)"
    )
    lr: float = option(1e-3, help="Adam learning rate (paper: 1e-3)")
    batch_size: int = option(16, help="global batch size, split over the ranks (paper: 16)")
    crop_size: int = option(256, help="training crop size (paper: 256)")
    eval_size: int = option(256, help="evaluation size (Fixed256: 256)")
    eval_batch_size: int = option(16, help="evaluation batch size")
    eval_every: int = option(10, help="evaluate every N epochs (0: only at the end)")
    val_fraction: float = option(
        0.05,
        help="share of the train list's real images held out as a validation split (with all their "
        "composites), on which best-model.safetensors is selected; 0: no validation split and no best model",
    )
    precision: Precision = option("auto", help="auto: bf16 on GPUs that have it, fp32 on the CPU")
    device: Device = option("auto", help="auto: CUDA when available")
    channels_last: bool | None = option(None, help="channels-last memory format (default: on CUDA)")
    optimizer: Optimizer = option(
        "adam", help="adam (paper; fused on CUDA) | apex (NVIDIA apex FusedAdam, if built) | sgd"
    )
    sync_bn: bool = option(True, help="SyncBatchNorm under DDP (default: on)")
    compile: bool = option(False, help="torch.compile the model")
    seed: int = option(0, help="random seed")
    deterministic: bool = option(False, help="deterministic algorithms (exact resume on GPUs too, slower)")
    workers: int = option(2, help="data-loading CPU workers per rank")
    backend: Backend = option("auto", help="data pipeline (auto: DALI when it imports)")
    init_weights: str | None = option(
        None, help="fine-tune from these GiftNet weights (e.g. ccHarmony after iHarmony4)"
    )
    teacher_weights: str | None = option(None, help="use this reconstruction branch instead of training one")
    student_init: StudentInit = option(
        "scratch",
        help="harmonization branch's start: scratch (paper) or teacher (its backbone copied from the trained "
        "reconstruction branch, GIFT near identity; for short budgets)",
    )
    log_every: int = option(20, help="log interval in steps")
    ckpt_every: int = option(500, help="checkpoint interval in steps (also at every epoch end)")
    keep_last: int = option(3, help="checkpoints kept per stage")
    max_bad_steps: int = option(50, help="stop after this many consecutive non-finite losses")
    skip_bad_data: bool = option(False, help="skip and log bad dataset items instead of refusing to start")
    demo_pairs: tuple[int, int] = option((640, 64), help="built-in dataset: TRAIN TEST pair counts")
    demo_size: int = option(128, help="built-in dataset: image short side")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ConfigError(message)

        need(self.stage in STAGES, f"--stage must be one of {STAGES}, got {self.stage!r}")
        need(self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.device in DEVICES, f"--device must be one of {DEVICES}, got {self.device!r}")
        need(self.backend in BACKENDS, f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        need(
            self.student_init in STUDENT_INITS,
            f"--student-init must be one of {STUDENT_INITS}, got {self.student_init!r}",
        )
        need(
            not (self.student_init == "teacher" and self.init_weights),
            "--student-init teacher and --init-weights are two starting points for the harmonization branch; give one",
        )
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.teacher_epochs is None or self.teacher_epochs >= 1, "--teacher-epochs must be >= 1")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0 and finite, got {self.lr}")
        for flag, value in (("--distill-weight", self.loss.distill_weight), ("--gamma", self.loss.gamma)):
            need(math.isfinite(value), f"{flag} must be finite, got {value}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        for name in ("crop_size", "eval_size"):
            value = getattr(self, name)
            need(
                value >= 8 and value % 8 == 0,
                f"--{name.replace('_', '-')} must be a positive multiple of 8, got {value}",
            )
        for name in ("eval_batch_size", "log_every", "ckpt_every", "keep_last", "max_bad_steps", "demo_size"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        need(
            math.isfinite(self.val_fraction) and 0 <= self.val_fraction <= 0.5,
            f"--val-fraction must be in [0, 0.5], got {self.val_fraction}",
        )
        need(self.eval_every >= 0 and self.workers >= 0, "--eval-every and --workers must be >= 0")
        need(len(self.demo_pairs) == 2 and min(self.demo_pairs) >= 1, "demo_pairs must be two positive counts")

    @property
    def needs_teacher(self) -> bool:
        """Whether the harmonization branch needs a reconstruction branch (to distil or to start from)."""
        return self.loss.uses_teacher or self.student_init == "teacher"

    @property
    def lr_milestones(self) -> tuple[int, ...]:
        if self.milestones is not None:
            return tuple(self.milestones)
        return tuple(sorted({max(1, round(self.epochs * f)) for f in (105 / 120, 115 / 120)}))

    def stage_epochs(self, stage: str) -> int:
        return (self.teacher_epochs or self.epochs) if stage == "reconstruction" else self.epochs

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> TrainConfig:
        """Strictly typed (see giftnet.fields); `where` names the source in messages."""
        return from_dict(cls, data, where)


# The CPU demo: `python train.py` with no --data trains on the built-in dataset in ~10 minutes.
DEMO_PROFILE: dict[str, Any] = {
    "out": "runs/demo",
    "epochs": 10,
    "teacher_epochs": 2,
    "batch_size": 8,
    "crop_size": 64,
    "eval_size": 128,
    "eval_every": 0,
    "log_every": 10,
    "ckpt_every": 100,
}
