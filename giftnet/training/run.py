"""A whole run: data, the stages in order, exports, evaluation, and clean stops on signals."""

from __future__ import annotations

import json
import signal

import torch
from rich.console import Console

from giftnet.evaluate import evaluate, format_table
from giftnet.fileio import atomic_write_bytes
from giftnet.metrics import to_255
from giftnet.model import GiftNet, parameter_breakdown
from giftnet.protocols import Protocol, settings
from giftnet.training import distributed as dist
from giftnet.training.checkpoint import (
    STAGE_ORDER,
    latest_checkpoint,
    list_checkpoints,
    read_metadata,
    remove_stale_temporaries,
)
from giftnet.training.config import TrainConfig
from giftnet.training.data import data_root, load_pairs
from giftnet.training.loop import (
    BEST_FILE,
    MODEL_FILE,
    TEACHER_FILE,
    Context,
    StopRequested,
    load_teacher,
    train_stage,
)
from giftnet.training.monitor import plot_losses, save_grid
from giftnet.training.preflight import preflight
from giftnet.weights import save_weights
from pipeline.ihd import list_subsets
from pipeline.loaders import make_eval_loader


def plan_stages(ctx: Context) -> list[str]:
    cfg = ctx.cfg
    stages = list(STAGE_ORDER) if cfg.stage == "all" else [cfg.stage]
    if cfg.teacher_weights and "reconstruction" in stages and cfg.stage == "all":
        stages.remove("reconstruction")
    latest = latest_checkpoint(ctx.run)
    if latest is not None and read_metadata(latest)["stage"] == "harmonization" and "reconstruction" in stages:
        stages.remove("reconstruction")  # resuming past the first stage
    return stages


def install_signal_handlers(ctx: Context) -> dict:
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, exit. A second SIGINT aborts.
    Returns the previous handlers, to restore."""

    def handler(signum, frame):
        if ctx.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        ctx.stop = True
        ctx.stop_signal = signum

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def make_evaluator(ctx: Context, test_pairs):
    """Evaluate on the test split: print the table, log it, keep the best weights, save a sample grid."""

    def on_eval(model: GiftNet, progress) -> None:
        if not test_pairs:
            return
        if dist.is_main():
            cfg = ctx.cfg
            results = evaluate(
                model, test_pairs, batch_size=cfg.eval_batch_size, size=cfg.eval_size, device=ctx.device,
                backend=cfg.backend, num_workers=cfg.workers, progress=False, precision=ctx.precision,
            )  # fmt: skip
            Console().print(format_table(results, settings(Protocol("fixed", cfg.eval_size), "max", "pred")))
            with (ctx.run / "eval.jsonl").open("a") as f:
                f.write(json.dumps({"step": progress.step, **results}) + "\n")
            mse = results["model"]["all"]["mse"]
            if mse < progress.best:
                progress.best = mse
                save_weights(model, ctx.run / BEST_FILE, {"step": str(progress.step), "mse": repr(mse)})
            write_sample_grid(ctx, model, test_pairs, progress.step)
        dist.barrier()

    return on_eval


def write_sample_grid(ctx: Context, model: GiftNet, pairs, step: int) -> None:
    loader = make_eval_loader(
        pairs[:4], batch_size=4, size=ctx.cfg.eval_size, device=ctx.device, backend=ctx.cfg.backend, num_workers=0
    )
    batch = next(iter(loader))
    with torch.no_grad():
        pred = to_255(model(batch["composite"], batch["mask"])["images"])
    grid = ctx.run / "samples" / f"step{step:09d}.png"
    save_grid(grid, batch["composite_255"], pred, batch["real_255"], batch["mask"])


def describe(ctx: Context, stages: list[str], train_pairs, test_pairs) -> None:
    cfg = ctx.cfg
    counts = parameter_breakdown(GiftNet(cfg.model))
    ctx.log(f"run folder   {ctx.run}")
    ctx.log(
        f"device       {ctx.device} x{dist.world_size()}  precision {ctx.precision}  channels_last {ctx.channels_last}"
    )
    ctx.log(f"data         {len(train_pairs)} train / {len(test_pairs)} test pairs  backend {cfg.backend}")
    ctx.log(
        f"stages       {', '.join(f'{s} ({cfg.stage_epochs(s)} epochs)' for s in stages)}  batch {cfg.batch_size}  crop {cfg.crop_size}"
    )
    ctx.log(
        f"model        {counts['total']:,} parameters (backbone {counts['backbone']:,}, GIFT {counts['gift']:,}); sites {list(cfg.model.gift_sites)}"
    )
    ctx.log(
        f"loss         {cfg.loss.harmonization} + {cfg.loss.distill_weight} x {cfg.loss.distill} on {list(cfg.loss.distill_sites)}"
    )


def run(cfg: TrainConfig, *, resume: bool = False, dry_run: bool = False) -> int:
    preflight(cfg, resume=resume)  # the dry run checks what the real run needs, and the real run too
    device = dist.init(cfg.device)
    ctx = Context(cfg, device)
    try:
        if not resume and dist.restart_count() > 0:
            # torchrun restarted the group after a worker died: the same command line comes back,
            # and every rank continues from the newest complete checkpoint, with no flag.
            resume = True
            ctx.log(f"torchrun restart {dist.restart_count()}: continuing from the newest checkpoint")
        if not resume and list_checkpoints(ctx.run):
            raise FileExistsError(
                f"{ctx.run} already holds checkpoints: pass --resume {ctx.run} to continue, or another --out"
            )
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        root = data_root(cfg)
        train_pairs = load_pairs(cfg, root, "train", ctx.log)
        test_pairs = load_pairs(cfg, root, "test", ctx.log) if list_subsets(root, "test") else []
        stages = plan_stages(ctx)
        describe(ctx, stages, train_pairs, test_pairs)
        if dry_run:
            ctx.log("dry run: configuration and data are valid; nothing was trained")
            return 0
        if dist.is_main():
            for p in remove_stale_temporaries(ctx.run) if ctx.run.is_dir() else []:
                ctx.log(f"removed {p.name}, left by a write that was interrupted")
            atomic_write_bytes(ctx.run / "config.json", json.dumps(cfg.to_dict(), indent=2).encode())
        previous = install_signal_handlers(ctx)
        try:
            return run_stages(ctx, stages, train_pairs, test_pairs)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    except StopRequested as stop:
        ctx.log(str(stop))
        return 128 + int(getattr(ctx, "stop_signal", signal.SIGINT))
    finally:
        dist.shutdown()


def run_stages(ctx: Context, stages: list[str], train_pairs, test_pairs) -> int:
    on_eval = make_evaluator(ctx, test_pairs)
    for stage in stages:
        if stage == "reconstruction":
            teacher, _ = train_stage(ctx, stage, train_pairs, None)
            if dist.is_main():
                save_weights(teacher, ctx.run / TEACHER_FILE)
            dist.barrier()
            continue
        model, progress = train_stage(ctx, stage, train_pairs, load_teacher(ctx), on_eval=on_eval)
        if dist.is_main():
            save_weights(model, ctx.run / MODEL_FILE)
            ctx.log(f"exported {ctx.run / MODEL_FILE}")
        on_eval(model, progress)
    if (
        dist.is_main()
        and (ctx.run / "stats.jsonl").exists()
        and plot_losses(ctx.run / "stats.jsonl", ctx.run / "loss.png")
    ):
        ctx.log(f"loss curves: {ctx.run / 'loss.png'}")
    return 0
