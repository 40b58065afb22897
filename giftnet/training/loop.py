"""The training loop of one stage, top to bottom: build, resume, epochs of steps, epoch ends.

`train_stage` is the whole of it; the sections below follow the order in which things happen.
The run (giftnet.training.run) calls it once per stage. Host syncs (`.item()`) happen only at the
log interval; under DDP the ranks agree before every step through the rendezvous store (host
side), so a rank that cannot go on stops them all at the same step, with a checkpoint.
"""

from __future__ import annotations

import torch

from giftnet.errors import DataError, UserError
from giftnet.losses import total_loss
from giftnet.model import GiftNet
from giftnet.training import distributed as dist
from giftnet.training.checkpoint import Progress, checkpoint_bytes
from giftnet.training.config import TrainConfig
from giftnet.training.precision import autocast
from giftnet.training.runfolder import checkpoint_name
from giftnet.training.signals import StopRequested
from giftnet.training.stage import Context, Stage, build_stage, unwrap


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (full disk, lost mount); the previous ones are intact."""

    exit_code = 1


class Diverged(UserError):
    """The losses are not finite (too many steps in a row, or every step of a stage)."""

    exit_code = 1


def train_stage(ctx: Context, name: str, train_pairs: list, teacher: GiftNet | None) -> tuple[GiftNet, Progress]:
    """Train one branch to the end of its epochs; return the (unwrapped, eval-mode) model and its progress."""
    st = build_stage(ctx, name, train_pairs, teacher)
    agree = dist.Agreement(name, stopping=lambda: ctx.signals.stop_signal)
    window = LogWindow(ctx.device)
    try:
        # --- a resumed run first finishes the evaluation its checkpoint was waiting for ---------
        if evaluation_due(ctx, st) and st.progress.evaluated != st.progress.step:
            evaluate_and_checkpoint(ctx, st)
        for epoch in range(st.progress.epoch, st.epochs):
            # --- epoch start: learning rate, where to start ---------------------------------------
            for group in st.optimizer.param_groups:
                group["lr"] = lr_at(ctx.cfg, epoch)
            start = st.progress.batch if epoch == st.progress.epoch else 0
            st.progress.epoch, st.progress.batch = epoch, start
            batches = iter(st.loader.epoch(epoch, start_batch=start))
            # --- each step starts when all ranks agree they can make it (a batch, no stop) ------
            while (batch := next_batch(ctx, st, batches, agree)) is not None:
                # --- the step ------------------------------------------------------------------
                window.add(train_step(ctx, st.step_model, st.teacher, batch, st.loss_cfg, st.optimizer, st.scaler,
                                      stage=name))  # fmt: skip
                st.progress.batch += 1
                st.progress.step += 1
                st.monitor.count(batch["mask"].shape[0] * dist.world_size())
                st.monitor.advance(st.progress.step)
                # --- log interval, checkpoint interval ------------------------------------------
                if st.progress.step % ctx.cfg.log_every == 0:
                    log_interval(ctx, st, window)
                if st.progress.step % ctx.cfg.ckpt_every == 0 and st.progress.batch < len(st.loader):
                    checkpoint(ctx, st)  # the epoch end saves anyway
            # --- epoch end: checkpoint, evaluation (then a checkpoint that holds its result) ----
            st.progress.epoch, st.progress.batch = epoch + 1, 0
            checkpoint(ctx, st)
            if evaluation_due(ctx, st):
                evaluate_and_checkpoint(ctx, st)
            if "stop" in agree("stop" if ctx.signals.stop_signal else "ok"):
                stop(ctx, st)
        # --- stage end: the last partial log interval; a stage that never had a finite loss --------
        if window.n:
            log_interval(ctx, st, window)
        if st.progress.step and st.progress.bad_steps >= st.progress.step:
            raise Diverged(
                f"every one of the {st.progress.step} steps of the {name} stage had a non-finite loss: "
                "nothing was learnt and no weights are exported (check --init-weights / --teacher-weights, "
                "lower --lr, try --precision fp32)"
            )
    finally:
        st.monitor.close()
    model = unwrap(st.model).eval()
    refuse_non_finite(model, name)
    return model, st.progress


# --- the learning rate -------------------------------------------------------------------------


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.lr_milestones)


# --- one step -------------------------------------------------------------------------------------


def next_batch(ctx: Context, st: Stage, batches, agree: dist.Agreement) -> dict | None:
    """The next batch, once every rank has one; None at the epoch end. A rank that met a file it
    cannot decode, or a signal, stops all of them here, at the same step, with a checkpoint."""
    batch, status = None, "ok"
    try:
        batch = next(batches)
    except StopIteration:
        status = "end"
    except DataError as exc:  # a file that fails to decode mid-run
        status = f"fail:{exc}"
    statuses = agree("stop" if status == "ok" and ctx.signals.stop_signal else status)
    failed = [s[5:] for s in statuses if s.startswith("fail:")]
    if failed:
        stop_on_bad_data(ctx, st, failed[0])
    if "end" in statuses:
        return None
    if "stop" in statuses:
        stop(ctx, st)
    return batch


def train_step(
    ctx: Context, model, teacher, batch, loss_cfg, optimizer, scaler, *, stage: str = "harmonization"
) -> dict[str, torch.Tensor]:
    """One optimizer step; returns the detached loss components (device tensors, no sync)."""
    fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
    mask = batch["mask"].contiguous(memory_format=fmt)
    real = batch["real"].contiguous(memory_format=fmt)
    # The reconstruction branch learns real -> real; the harmonization branch composite -> real.
    inputs = real if stage == "reconstruction" else batch["composite"].contiguous(memory_format=fmt)
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


# --- logging ----------------------------------------------------------------------------------------


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


def log_interval(ctx: Context, st: Stage, window: LogWindow) -> None:
    values, bad, worst = window.flush()
    st.progress.bad_steps += bad
    values["skipped"] = float(bad)
    st.monitor.log(st.progress.step, st.progress.epoch, st.optimizer.param_groups[0]["lr"], values, ctx.device)
    if bad:
        ctx.log(
            f"step {st.progress.step}: {bad} step(s) with a non-finite loss were skipped "
            f"({st.progress.bad_steps} in all)"
        )
    if worst >= ctx.cfg.max_bad_steps:
        raise Diverged(
            f"{worst} consecutive steps had a non-finite loss (limit --max-bad-steps {ctx.cfg.max_bad_steps}); "
            "lower --lr, try --precision fp32, or check the data"
        )


def refuse_non_finite(model: GiftNet, stage: str) -> None:
    """No weights with NaN/inf leave a stage (they would be exported and used)."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise Diverged(f"the {stage} stage ended with non-finite weights ({bad[:3]}...); nothing was exported")


# --- checkpoints, evaluation, stops -------------------------------------------------------------------


def checkpoint(ctx: Context, st: Stage) -> None:
    """Save the stage's whole state (rank 0), pruning older checkpoints; a second Ctrl-C waits for it."""
    if dist.is_main():
        data = checkpoint_bytes(
            stage=st.name,
            model=unwrap(st.model),
            optimizer=st.optimizer,
            scaler=st.scaler,
            progress=st.progress,
            train_config=ctx.cfg.to_dict(),
        )
        with ctx.signals.uninterrupted():
            try:
                ctx.folder.write_checkpoint(st.name, st.progress.step, data, ctx.cfg.keep_last)
            except OSError as exc:  # the atomic write left the older checkpoints as they were
                previous = ctx.folder.latest_checkpoint()
                kept = f"the last good checkpoint is {previous.name}" if previous else "no earlier checkpoint exists"
                raise CheckpointWriteError(
                    f"cannot write checkpoint {ctx.folder / checkpoint_name(st.name, st.progress.step)} "
                    f"({exc.strerror or exc}); {kept}: free space, then continue with --resume {ctx.folder.path}"
                ) from exc
    dist.barrier()


def evaluation_due(ctx: Context, st: Stage) -> bool:
    """At this epoch end (batch 0 of epoch E > 0): every --eval-every epochs and after the last one."""
    if ctx.evaluate is None or st.name != "harmonization" or st.progress.batch or not st.progress.epoch:
        return False
    done = st.progress.epoch
    return done == st.epochs or bool(ctx.cfg.eval_every and done % ctx.cfg.eval_every == 0)


def evaluate_and_checkpoint(ctx: Context, st: Stage) -> None:
    """Evaluate (eval mode, no side effect on training) and save a checkpoint that holds the result,
    so that a kill after any file the evaluation writes resumes to the same run."""
    assert ctx.evaluate is not None, "called only when evaluation_due, which needs ctx.evaluate"
    ctx.evaluate(unwrap(st.model), st.progress)
    st.model.train()
    st.progress.evaluated = st.progress.step
    checkpoint(ctx, st)


def stop(ctx: Context, st: Stage) -> None:
    checkpoint(ctx, st)
    raise StopRequested(
        ctx.signals.stop_signal, f"stopped at step {st.progress.step}; resume with --resume {ctx.folder.path}"
    )


def stop_on_bad_data(ctx: Context, st: Stage, message: str) -> None:
    """All ranks met the failure at the same step boundary: save the last completed step and stop."""
    checkpoint(ctx, st)
    raise DataError(
        f"{message}\nstopped: checkpoint saved at step {st.progress.step}. Fix or remove the file "
        "(`python -m giftnet.pipeline.check DATA` decodes every image and lists all such files, or pass "
        f"--skip-bad-data), then continue with --resume {ctx.folder.path}"
    )
