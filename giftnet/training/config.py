"""The trainer's typed configuration: the paper's recipe, the CPU demo profile, CLI and JSON.

Precedence: profile defaults < JSON config file (--config) < command-line flags. The resolved
config is written to RUN/config.json; --resume reads it back from there.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from giftnet.config import LossConfig, ModelConfig

STAGES = ("all", "reconstruction", "harmonization")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adam", "apex", "sgd")
BACKENDS = ("auto", "dali", "torch")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs. Defaults are the paper's recipe (docs/decisions.md, "Training")."""

    data: str | None = None  # iHarmony4-layout root; None: the built-in demo dataset
    subsets: tuple[str, ...] = ()  # subset folders under data; () = every one with a train list
    out: str = "runs/giftnet"
    stage: str = "all"  # all = reconstruction branch, then harmonization branch
    epochs: int = 120
    teacher_epochs: int | None = None  # reconstruction branch; None = epochs
    milestones: tuple[int, ...] | None = None  # lr x0.1 at these epochs; None = 105/120, 115/120 of epochs
    lr: float = 1e-3
    batch_size: int = 16  # global batch, split evenly over the ranks
    crop_size: int = 256
    eval_size: int = 256
    eval_batch_size: int = 16
    eval_every: int = 10  # epochs; 0 = only at the end
    precision: str = "auto"  # auto: bf16 on GPUs that have it, fp32 elsewhere
    device: str = "auto"
    channels_last: bool | None = None  # None: on CUDA
    optimizer: str = "adam"  # adam: torch Adam (fused on CUDA); apex: apex FusedAdam (needs apex built)
    sync_bn: bool = True  # under DDP
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    workers: int = 2
    backend: str = "auto"  # data: auto | dali | torch
    init_weights: str | None = None  # fine-tune: start the harmonization branch from these weights
    teacher_weights: str | None = None  # use these instead of training the reconstruction branch
    log_every: int = 20  # steps
    ckpt_every: int = 500  # steps (and at every epoch end)
    keep_last: int = 3
    max_bad_steps: int = 50  # stop when this many consecutive steps have a non-finite loss
    skip_bad_data: bool = False
    demo_pairs: tuple[int, int] = (640, 64)  # built-in dataset: train, test pairs
    demo_size: int = 128
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ValueError(message)

        need(self.stage in STAGES, f"--stage must be one of {STAGES}, got {self.stage!r}")
        need(self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device!r}")
        need(self.backend in BACKENDS, f"--backend must be one of {BACKENDS}, got {self.backend!r}")
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
        need(self.eval_every >= 0 and self.workers >= 0, "--eval-every and --workers must be >= 0")
        need(len(self.demo_pairs) == 2 and min(self.demo_pairs) >= 1, "demo_pairs must be two positive counts")

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
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}")
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if "model" in kw:
            kw["model"] = ModelConfig.from_dict(data["model"])
        if "loss" in kw:
            kw["loss"] = LossConfig.from_dict(data["loss"])
        return cls(**kw)


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
