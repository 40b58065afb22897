"""What a stage of training is made of, and how it is built: the shared run context, the stage's
model (fresh, from a teacher's backbone, or fine-tuned), DDP wrapping, optimizer, scaler, loader,
and the restore from the stage's newest checkpoint. The loop itself is giftnet.training.loop.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from giftnet.config import LossConfig
from giftnet.errors import UsageError, UserError, WeightsError
from giftnet.model import GiftNet, build_model, build_teacher
from giftnet.pipeline.loaders import TrainLoader, make_train_loader
from giftnet.training import distributed as dist
from giftnet.training.checkpoint import Progress, load_checkpoint, read_metadata
from giftnet.training.config import TrainConfig
from giftnet.training.monitor import Monitor
from giftnet.training.precision import make_optimizer, make_scaler, resolve_precision
from giftnet.training.runfolder import STAGE_ORDER, TEACHER_FILE, RunFolder
from giftnet.training.signals import Signals
from giftnet.training.syncbn import convert_sync_batchnorm
from giftnet.weights import load_state_checked, load_weights, read_model_config


@dataclasses.dataclass
class Context:
    """What every stage shares: config, run folder, device, precision, signals, evaluation."""

    cfg: TrainConfig
    device: torch.device
    folder: RunFolder = dataclasses.field(init=False)
    precision: str = dataclasses.field(init=False)
    channels_last: bool = dataclasses.field(init=False)
    signals: Signals = dataclasses.field(default_factory=Signals)
    # evaluate(model, progress): score the validation (keep the best) and test splits; None: neither
    evaluate: Callable[[GiftNet, Progress], None] | None = None

    def __post_init__(self) -> None:
        self.folder = RunFolder(self.cfg.out, self.log)
        self.precision = resolve_precision(self.cfg.precision, self.device)
        cl = self.cfg.channels_last
        self.channels_last = cl if cl is not None else self.device.type == "cuda"

    def log(self, *args: Any) -> None:
        if dist.is_main():
            print(*args, flush=True)


@dataclasses.dataclass
class Stage:
    """The state of one stage: what `train_stage` builds, and the loop reads and advances."""

    name: str
    epochs: int
    model: torch.nn.Module  # DDP-wrapped under torchrun
    step_model: Callable[..., dict[str, torch.Tensor]]  # `model`, or its torch.compile
    teacher: GiftNet | None
    loader: TrainLoader
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_cfg: LossConfig
    progress: Progress
    monitor: Monitor


# --- building a stage ----------------------------------------------------------------------------


def build_stage(ctx: Context, name: str, train_pairs: list, teacher: GiftNet | None) -> Stage:
    """Model, optimizer, scaler and loader of `name`, restored from its newest checkpoint if any."""
    cfg = ctx.cfg
    model = prepare(ctx, build_stage_model(ctx, name, teacher))
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.optimizer, ctx.device)
    scaler = make_scaler(ctx.precision, ctx.device)
    torch.manual_seed(cfg.seed + dist.rank())  # per-rank; a resumed run restores the saved state instead
    progress = resume_point(ctx, name, model, optimizer, scaler)
    loader = make_train_loader(
        train_pairs,
        batch_size=per_rank_batch(cfg.batch_size),
        crop_size=cfg.crop_size,
        seed=cfg.seed + STAGE_ORDER.index(name),
        rank=dist.rank(),
        world_size=dist.world_size(),
        num_workers=cfg.workers,
        device=ctx.device,
        backend=cfg.backend,
    )
    epochs = cfg.stage_epochs(name)
    monitor = Monitor(ctx.folder, name, epochs * len(loader), progress.step, dist.is_main())
    model.train()
    step_model = torch.compile(model) if cfg.compile else model
    distil_from = teacher if ctx.cfg.loss.uses_teacher else None  # a teacher only used as the start runs no forward
    return Stage(name, epochs, model, step_model, distil_from, loader, optimizer, scaler,
                 stage_loss_config(ctx, name), progress, monitor)  # fmt: skip


def build_stage_model(ctx: Context, stage: str, teacher: GiftNet | None = None) -> GiftNet:
    """The stage's network at its start (a resumed run then loads its checkpoint over it)."""
    torch.manual_seed(ctx.cfg.seed + 1000 * STAGE_ORDER.index(stage))  # same init on every rank
    if stage == "reconstruction":
        return build_teacher(ctx.cfg.model)
    model = build_model(ctx.cfg.model)
    if ctx.cfg.student_init == "teacher":
        if teacher is None:
            raise RuntimeError("build_stage_model: --student-init teacher but no teacher was loaded")
        copy_backbone(teacher, model)
    if ctx.cfg.init_weights:  # fine-tuning (the ccHarmony protocol): same architecture required
        declared = read_model_config(ctx.cfg.init_weights)
        if declared != ctx.cfg.model:
            raise WeightsError(
                f"--init-weights {ctx.cfg.init_weights}: architecture {declared} differs from {ctx.cfg.model}"
            )
        model.load_state_dict(load_state_checked(ctx.cfg.init_weights, model.state_dict()))
    return model


def copy_backbone(teacher: GiftNet, student: GiftNet) -> None:
    """Start the student from the teacher: every backbone tensor copied; GIFT keeps its near-identity init.

    The two share the iSSAM backbone exactly (the teacher has no GIFT sites), so the student's own
    keys are the teacher's plus the GIFT ones; anything else is a bug in our model code.
    """
    theirs, ours = teacher.state_dict(), student.state_dict()
    stray = [k for k in theirs if k not in ours or ours[k].shape != theirs[k].shape]
    left = [k for k in ours if k not in theirs and not k.startswith("gift.")]
    if stray or left:
        raise RuntimeError(f"copy_backbone: teacher and student backbones differ ({stray[:3]}, {left[:3]})")
    with torch.no_grad():
        for key, value in theirs.items():
            ours[key].copy_(value)


def load_teacher(ctx: Context) -> GiftNet:
    path = Path(ctx.cfg.teacher_weights) if ctx.cfg.teacher_weights else ctx.folder / TEACHER_FILE
    if not ctx.cfg.teacher_weights and not path.is_file():
        raise UsageError(
            f"{path}: teacher weights not found (train the reconstruction stage first, or give --teacher-weights)"
        )
    teacher = load_weights(path, ctx.device, role="teacher")
    if teacher.config.gift_sites:
        raise WeightsError(f"{path}: a teacher must be the plain backbone, but these weights have GIFT sites")
    if teacher.config.base_channels != ctx.cfg.model.base_channels:
        raise WeightsError(
            f"{path}: the teacher has base_channels {teacher.config.base_channels}, "
            f"but the model being trained has {ctx.cfg.model.base_channels}"
        )
    if ctx.channels_last:
        # torch's stubs list Module.to's overloads without memory_format, which Module.to accepts
        teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return teacher.eval().requires_grad_(False)


def prepare(ctx: Context, model: torch.nn.Module) -> torch.nn.Module:
    model.to(ctx.device)
    if ctx.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as in load_teacher
    if dist.world_size() > 1:
        if ctx.cfg.sync_bn:
            model = convert_sync_batchnorm(model, ctx.device)
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=not ctx.cfg.sync_bn)
    return model


def unwrap(model: torch.nn.Module) -> GiftNet:
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(inner, GiftNet):
        raise TypeError(f"expected a GiftNet, plain or DDP-wrapped, got {type(inner).__name__}")
    return inner


def stage_loss_config(ctx: Context, stage: str) -> LossConfig:
    if stage == "reconstruction":
        return LossConfig(harmonization=ctx.cfg.loss.harmonization, distill="none", distill_sites=())
    return ctx.cfg.loss


def per_rank_batch(batch_size: int) -> int:
    if batch_size % dist.world_size():
        raise UserError(f"--batch-size {batch_size} must be divisible by the number of processes ({dist.world_size()})")
    return batch_size // dist.world_size()


def resume_point(ctx: Context, stage: str, model, optimizer, scaler) -> Progress:
    """Load the newest checkpoint of `stage` in the run folder, or start fresh."""
    path = ctx.folder.latest_checkpoint()
    if path is None:
        return Progress()
    meta = read_metadata(path)
    if meta["stage"] != stage:
        return Progress()
    mine = unwrap(model).config.to_dict()
    saved = _json_field(path, meta, "model_config")
    if saved != mine:
        raise WeightsError(
            f"{path}: cannot resume, the checkpoint's architecture {saved} differs from this run's {mine}"
        )
    progress = load_checkpoint(path, model=unwrap(model), optimizer=optimizer, scaler=scaler)
    ctx.log(f"resumed {stage} from {path.name}: epoch {progress.epoch}, batch {progress.batch}, step {progress.step}")
    return progress


def _json_field(path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError) as exc:  # the user's file: name it
        raise WeightsError(f"{path}: damaged checkpoint metadata ({key}: {exc!r})") from None
