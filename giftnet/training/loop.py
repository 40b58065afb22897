"""The training loop: reconstruction branch, then harmonization branch with relation distillation.

Reads top to bottom: `run` plans the stages; `train_stage` builds the model, optimizer and
loader of one stage, resumes it if a checkpoint says so, and runs `train_step` over the epochs.
Host syncs (`.item()`) happen only at the log interval.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from giftnet.config import LossConfig
from giftnet.losses import total_loss
from giftnet.model import GiftNet, build_model, build_teacher
from giftnet.training import distributed as dist
from giftnet.training.checkpoint import (
    STAGE_ORDER,
    Progress,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    prune,
    read_metadata,
    save_checkpoint,
)
from giftnet.training.config import TrainConfig
from giftnet.training.monitor import Monitor, truncate_stats
from giftnet.training.precision import autocast, make_optimizer, make_scaler, resolve_precision
from giftnet.training.syncbn import convert_sync_batchnorm
from giftnet.weights import WeightsError, load_state_checked, load_weights, read_model_config
from pipeline.loaders import make_train_loader
from pipeline.pairs import DatasetError

TEACHER_FILE, MODEL_FILE, BEST_FILE = "teacher.safetensors", "model.safetensors", "best-model.safetensors"


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""


class Context:
    """What every stage shares: config, run folder, device, precision, data, stop flag."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.run = Path(cfg.out)
        self.precision = resolve_precision(cfg.precision, device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
        self.stop = False
        self.log = print if dist.is_main() else (lambda *a: None)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.lr_milestones)


def prepare(ctx: Context, model: torch.nn.Module) -> torch.nn.Module:
    model.to(ctx.device)
    if ctx.channels_last:
        model.to(memory_format=torch.channels_last)
    if dist.world_size() > 1:
        if ctx.cfg.sync_bn:
            model = convert_sync_batchnorm(model, ctx.device)
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=not ctx.cfg.sync_bn)
    return model


def unwrap(model: torch.nn.Module) -> GiftNet:
    return model.module if isinstance(model, DistributedDataParallel) else model


def train_step(ctx, model, teacher, batch, loss_cfg, optimizer, scaler) -> dict[str, torch.Tensor]:
    """One optimizer step; returns the detached loss components (device tensors, no sync)."""
    fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
    mask = batch["mask"].contiguous(memory_format=fmt)
    real = batch["real"].contiguous(memory_format=fmt)
    # The reconstruction branch learns real -> real; the harmonization branch composite -> real.
    inputs = real if ctx.stage == "reconstruction" else batch["composite"].contiguous(memory_format=fmt)
    with autocast(ctx.precision, ctx.device):
        t_feats = None
        if teacher is not None:
            with torch.no_grad():
                t_feats = teacher(real, mask)
        parts = total_loss(model(inputs, mask), real, mask, loss_cfg, t_feats)
    scaler.scale(parts["total"]).backward()
    scaler.step(optimizer)
    scaler.update(None if ctx.precision == "fp16" else 1.0)
    optimizer.zero_grad(set_to_none=True)
    return {k: v.detach().float() for k, v in parts.items()}


def stage_loss_config(ctx: Context, stage: str) -> LossConfig:
    if stage == "reconstruction":
        return LossConfig(harmonization=ctx.cfg.loss.harmonization, distill="none", distill_sites=())
    return ctx.cfg.loss


def build_stage_model(ctx: Context, stage: str) -> GiftNet:
    torch.manual_seed(ctx.cfg.seed + 1000 * STAGE_ORDER.index(stage))  # same init on every rank
    if stage == "reconstruction":
        return build_teacher(ctx.cfg.model)
    model = build_model(ctx.cfg.model)
    if ctx.cfg.init_weights:  # fine-tuning (the ccHarmony protocol): same architecture required
        declared = read_model_config(ctx.cfg.init_weights)
        if declared != ctx.cfg.model:
            raise WeightsError(
                f"--init-weights {ctx.cfg.init_weights}: architecture {declared} differs from {ctx.cfg.model}"
            )
        model.load_state_dict(load_state_checked(ctx.cfg.init_weights, model.state_dict()))
    return model


def load_teacher(ctx: Context) -> GiftNet:
    path = Path(ctx.cfg.teacher_weights) if ctx.cfg.teacher_weights else ctx.run / TEACHER_FILE
    if not path.is_file():
        raise FileNotFoundError(
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
        teacher.to(memory_format=torch.channels_last)
    return teacher.eval().requires_grad_(False)


class LogWindow:
    """Loss sums and non-finite counts kept on the device between log intervals."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0
        self.bad = torch.zeros((), device=device)
        self.run_of_bad = torch.zeros((), device=device)
        self.worst_run = torch.zeros((), device=device)

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        bad = (~torch.isfinite(parts["total"])).float()
        self.bad += bad
        self.run_of_bad = (self.run_of_bad + bad) * bad
        self.worst_run = torch.maximum(self.worst_run, self.run_of_bad)
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0) + torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        self.n += 1

    def flush(self) -> tuple[dict[str, float], int, int]:
        """(mean components over finite steps, non-finite steps, longest run of them): one sync."""
        keys = list(self.sums)
        sums = dist.all_reduce_mean(torch.stack([self.sums[k] for k in keys])).tolist()  # over ranks
        bad, worst = (int(v) for v in dist.all_reduce_max(torch.stack([self.bad, self.worst_run])).tolist())
        good = max(self.n - bad, 1)
        values = {k: v / good for k, v in zip(keys, sums, strict=True)}
        self.sums, self.n = {}, 0
        self.bad.zero_()
        self.worst_run.zero_()
        return values, bad, worst


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, lost mount); the previous ones are intact."""


def checkpoint(ctx, stage, model, optimizer, scaler, progress) -> None:
    path = ctx.run / checkpoint_name(stage, progress.step)
    if dist.is_main():
        try:
            save_checkpoint(
                path,
                stage=stage,
                model=unwrap(model),
                optimizer=optimizer,
                scaler=scaler,
                progress=progress,
                train_config=ctx.cfg.to_dict(),
            )
        except OSError as exc:  # atomic_write_bytes left the older checkpoints as they were
            previous = latest_checkpoint(ctx.run)
            kept = f"the last good checkpoint is {previous.name}" if previous else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                exc.errno, f"cannot write checkpoint {path} ({exc.strerror or exc}); {kept}: "
                f"free space, then continue with --resume {ctx.run}"
            ) from exc  # fmt: skip
        prune(ctx.run, stage, ctx.cfg.keep_last)
    dist.barrier()


def resume_point(ctx: Context, stage: str, model, optimizer, scaler) -> Progress:
    """Load the newest checkpoint of `stage` in the run folder, or start fresh."""
    path = latest_checkpoint(ctx.run)
    if path is None or read_metadata(path)["stage"] != stage:
        return Progress()
    meta = read_metadata(path)
    try:
        saved = json.loads(meta["model_config"])
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: damaged checkpoint metadata (model_config: {exc!r})") from None
    mine = unwrap(model).config.to_dict()
    if saved != mine:
        raise WeightsError(
            f"{path}: cannot resume, the checkpoint's architecture {saved} differs from this run's {mine}"
        )
    progress = load_checkpoint(path, model=unwrap(model), optimizer=optimizer, scaler=scaler)
    ctx.log(f"resumed {stage} from {path.name}: epoch {progress.epoch}, batch {progress.batch}, step {progress.step}")
    truncate_stats(ctx.run / "stats.jsonl", stage, progress.step)
    return progress


def per_rank_batch(batch_size: int) -> int:
    if batch_size % dist.world_size():
        raise ValueError(
            f"--batch-size {batch_size} must be divisible by the number of processes ({dist.world_size()})"
        )
    return batch_size // dist.world_size()


def train_stage(
    ctx: Context, stage: str, train_pairs, teacher: GiftNet | None, on_eval=None
) -> tuple[GiftNet, Progress]:
    """Train one branch to the end of its epochs; return the (unwrapped) model and its progress."""
    cfg, ctx.stage = ctx.cfg, stage
    model = prepare(ctx, build_stage_model(ctx, stage))
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.optimizer, ctx.device)
    scaler = make_scaler(ctx.precision, ctx.device)
    torch.manual_seed(cfg.seed + dist.rank())  # per-rank; a resumed run restores the saved state instead
    progress = resume_point(ctx, stage, model, optimizer, scaler)
    loader = make_train_loader(
        train_pairs,
        batch_size=per_rank_batch(cfg.batch_size),
        crop_size=cfg.crop_size,
        seed=cfg.seed + STAGE_ORDER.index(stage),
        rank=dist.rank(),
        world_size=dist.world_size(),
        num_workers=cfg.workers,
        device=ctx.device,
        backend=cfg.backend,
    )
    step_model = torch.compile(model) if cfg.compile else model
    monitor = Monitor(ctx.run, stage, cfg.stage_epochs(stage) * len(loader), progress.step, dist.is_main())
    model.train()
    try:
        run_epochs(ctx, stage, model, step_model, teacher, loader, optimizer, scaler, progress, monitor, on_eval)
    finally:
        monitor.close()
    return unwrap(model).eval(), progress


def run_epochs(ctx, stage, model, step_model, teacher, loader, optimizer, scaler, progress, monitor, on_eval) -> None:
    """The epochs of one stage from `progress` on. A file the loader cannot decode stops the run
    with a checkpoint at the last completed step and a message naming the file."""
    cfg = ctx.cfg
    epochs, loss_cfg = cfg.stage_epochs(stage), stage_loss_config(ctx, stage)
    window = LogWindow(ctx.device)
    try:
        for epoch in range(progress.epoch, epochs):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            start = progress.batch if epoch == progress.epoch else 0
            progress.epoch, progress.batch = epoch, start
            for batch in loader.epoch(epoch, start_batch=start):
                window.add(train_step(ctx, step_model, teacher, batch, loss_cfg, optimizer, scaler))
                progress.batch += 1
                progress.step += 1
                monitor.count(batch["mask"].shape[0] * dist.world_size())
                monitor.advance(progress.step)
                if progress.step % cfg.log_every == 0:
                    log_interval(ctx, monitor, window, progress, epoch, optimizer)
                if progress.step % cfg.ckpt_every == 0 and progress.batch < len(loader):  # epoch end saves anyway
                    checkpoint(ctx, stage, model, optimizer, scaler, progress)
                if should_stop(ctx, progress.step):
                    checkpoint(ctx, stage, model, optimizer, scaler, progress)
                    raise StopRequested(f"stopped at step {progress.step}; resume with --resume {ctx.run}")
            progress.epoch, progress.batch = epoch + 1, 0
            checkpoint(ctx, stage, model, optimizer, scaler, progress)
            if on_eval is not None and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < epochs:
                on_eval(unwrap(model), progress)
                model.train()
    except DatasetError as exc:
        saved = "the last checkpoint is kept"
        if dist.world_size() == 1:  # under DDP the other ranks are not at a barrier
            checkpoint(ctx, stage, model, optimizer, scaler, progress)
            saved = f"checkpoint saved at step {progress.step}"
        raise DatasetError(
            f"{exc}\nstopped: {saved}. Fix or remove the file (`python -m pipeline.check DATA` decodes every "
            f"image and lists all such files, or pass --skip-bad-data), then continue with --resume {ctx.run}"
        ) from None


def should_stop(ctx: Context, step: int) -> bool:
    """A signal arrived (on any rank: under DDP the ranks agree at log intervals)."""
    if dist.world_size() == 1:
        return ctx.stop
    return step % ctx.cfg.log_every == 0 and dist.broadcast_flag(ctx.stop, ctx.device)


def log_interval(ctx, monitor, window, progress, epoch, optimizer) -> None:
    values, bad, worst = window.flush()
    progress.bad_steps += bad
    values["skipped"] = float(bad)
    monitor.log(progress.step, epoch, optimizer.param_groups[0]["lr"], values, ctx.device)
    if bad:
        ctx.log(
            f"step {progress.step}: {bad} step(s) with a non-finite loss were skipped ({progress.bad_steps} in all)"
        )
    if worst >= ctx.cfg.max_bad_steps:
        raise FloatingPointError(
            f"{worst} consecutive steps had a non-finite loss (limit --max-bad-steps {ctx.cfg.max_bad_steps}); "
            "lower --lr, try --precision fp32, or check the data"
        )
