"""A whole run: lock the folder, check a resume, load data, the stages in order, exports.

`run` is what train.py calls. A user's mistake raises a giftnet.errors.UserError (the CLI turns
it into a message and exit 2); a signal ends with 128+N and a resumable folder.
"""

from __future__ import annotations

import functools
import json

import torch

from giftnet.errors import UsageError
from giftnet.model import GiftNet, parameter_breakdown
from giftnet.pipeline.ihd import list_subsets
from giftnet.training import distributed as dist
from giftnet.training.checkpoint import read_metadata, read_progress
from giftnet.training.config import TrainConfig
from giftnet.training.data import data_root, load_pairs, split_validation
from giftnet.training.evaluation import make_evaluator, write_plot
from giftnet.training.loop import train_stage
from giftnet.training.preflight import preflight
from giftnet.training.runfolder import BEST_FILE, MODEL_FILE, STAGE_ORDER, TEACHER_FILE
from giftnet.training.runinfo import run_info
from giftnet.training.signals import StopRequested
from giftnet.training.stage import Context, load_teacher
from giftnet.weights import WeightsError, save_weights

# Fields a resumed run may change: they do not change what the run computes.
FREE_ON_RESUME = frozenset(
    {"out", "log_every", "ckpt_every", "keep_last", "workers", "max_bad_steps", "eval_every", "eval_batch_size"}
)


def run(cfg: TrainConfig, *, resume: bool = False, dry_run: bool = False) -> int:
    # torchrun restarted the group after a worker died: the same command line comes back, and every
    # rank continues from the newest complete checkpoint, with no flag.
    restarted = not resume and dist.restart_count() > 0
    resume = resume or restarted
    preflight(cfg, resume=resume)  # the dry run checks what the real run needs, and the real run too
    device = dist.init(cfg.device)
    ctx = Context(cfg, device)
    if restarted:
        ctx.log(f"torchrun restart {dist.restart_count()}: continuing from the newest checkpoint")
    ok = False
    try:
        code = run_in(ctx, resume, dry_run)
        ok = True
        return code
    except StopRequested as stop:
        ctx.log(f"{stop}; the run folder is consistent: resume with --resume {ctx.folder.path}")
        return 128 + int(stop.signum)
    except KeyboardInterrupt:
        latest = ctx.folder.latest_checkpoint()
        kept = f"the last checkpoint {latest.name} is intact" if latest else "no checkpoint was written yet"
        ctx.log(f"aborted by a second Ctrl-C; {kept}: resume with --resume {ctx.folder.path}")
        return 130
    finally:
        ctx.folder.unlock()
        dist.shutdown(ok)  # no final barrier after an error: another rank may be in a collective


def run_in(ctx: Context, resume: bool, dry_run: bool) -> int:
    cfg, folder = ctx.cfg, ctx.folder
    if not dry_run and dist.is_main():
        folder.lock()
    if not resume and folder.checkpoints():
        raise UsageError(
            f"{folder.path} already holds checkpoints: pass --resume {folder.path} to continue, or another --out"
        )
    if resume:
        refuse_changed_settings(ctx)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    root = data_root(cfg)
    train_pairs, val_pairs = split_validation(cfg, root, load_pairs(cfg, root, "train", ctx.log))
    test_pairs = load_pairs(cfg, root, "test", ctx.log) if list_subsets(root, "test") else []
    stages = plan_stages(ctx)
    describe(ctx, stages, train_pairs, val_pairs, test_pairs)
    if dry_run:
        ctx.log("dry run: configuration and data are valid; nothing was trained")
        return 0
    if dist.is_main():
        for p in folder.remove_stale_temporaries():
            ctx.log(f"removed {p.name}, left by a write that was interrupted")
        truncate_logs(ctx)
        folder.write_config(cfg.to_dict())
        folder.write("config", folder / "run-info.json", json.dumps(run_info(ctx), indent=2).encode())
    dist.barrier()
    ctx.evaluate = make_evaluator(ctx, val_pairs, test_pairs)
    with ctx.signals.installed():
        return run_stages(ctx, stages, train_pairs)


def run_stages(ctx: Context, stages: list[str], train_pairs: list) -> int:
    folder = ctx.folder
    for stage in stages:
        if stage == "reconstruction":
            branch, _ = train_stage(ctx, stage, train_pairs, None)
            if dist.is_main():
                folder.export("teacher", functools.partial(save_weights, branch), folder / TEACHER_FILE)
            dist.barrier()
            continue
        teacher = load_teacher(ctx) if ctx.cfg.needs_teacher else None
        model, _ = train_stage(ctx, stage, train_pairs, teacher)
        if dist.is_main():
            folder.export("model", functools.partial(save_weights, model), folder / MODEL_FILE)
            ctx.log(f"exported {folder / MODEL_FILE}")
    if dist.is_main() and write_plot(folder, ctx.cfg.loss.distill_weight):
        ctx.log(f"loss curves: {folder / 'loss.png'}")
    return 0


def plan_stages(ctx: Context) -> list[str]:
    cfg = ctx.cfg
    stages: list[str] = list(STAGE_ORDER) if cfg.stage == "all" else [cfg.stage]
    if cfg.stage == "all" and (cfg.teacher_weights or not cfg.needs_teacher):
        stages.remove("reconstruction")  # a teacher is given, or none is needed
    latest = ctx.folder.latest_checkpoint()
    if latest is not None and read_metadata(latest)["stage"] == "harmonization" and "reconstruction" in stages:
        stages.remove("reconstruction")  # resuming past the first stage
    return stages


def truncate_logs(ctx: Context) -> None:
    """At start: repair a cut last line of stats.jsonl / eval.jsonl (or refuse a damaged one), and
    drop what a killed run logged after the checkpoint this run resumes from."""
    latest = ctx.folder.latest_checkpoint()
    if latest is None:
        ctx.folder.truncate_logs((-1, 0), (-1, 0))
        return
    stage, progress = read_progress(latest)
    index = STAGE_ORDER.index(stage)
    ctx.folder.truncate_logs((index, progress.step), (index, progress.evaluated))


def _flat(config: dict, prefix: str = "") -> dict:
    out: dict[str, object] = {}
    for k, v in config.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def refuse_changed_settings(ctx: Context) -> None:
    """--resume continues the run exactly, so a setting that changes the result cannot change."""
    latest = ctx.folder.latest_checkpoint()
    if latest is None:
        return
    try:
        saved = _flat(json.loads(read_metadata(latest)["train_config"]))
    except (KeyError, ValueError) as exc:  # the user's file: name it
        raise WeightsError(f"{latest}: damaged checkpoint metadata (train_config: {exc!r})") from None
    now = _flat(ctx.cfg.to_dict())
    changed = [
        f"{k} ({saved[k]!r} -> {v!r})"
        for k, v in now.items()
        if k in saved and k not in FREE_ON_RESUME and saved[k] != v
    ]
    if not changed:
        return
    run = ctx.folder.path
    weights = [f"--init-weights {run / f}" for f in (MODEL_FILE, BEST_FILE) if (run / f).is_file()]
    if (run / TEACHER_FILE).is_file():
        weights.append(f"--teacher-weights {run / TEACHER_FILE} (its reconstruction branch)")
    how = (
        "start a new run (another --out) from this one's weights: " + " or ".join(weights)
        if weights
        else "this run has exported no weights yet: resume it unchanged, or start a new run"
    )
    raise UsageError(
        f"--resume {run}: cannot resume with changed settings: {', '.join(changed)}. A resumed run continues "
        f"{latest.name} exactly, and these change the result. To use them, {how}"
    )


def describe(ctx: Context, stages: list[str], train_pairs: list, val_pairs: list, test_pairs: list) -> None:
    cfg = ctx.cfg
    counts = parameter_breakdown(GiftNet(cfg.model))
    ctx.log(f"run folder   {ctx.folder.path}")
    ctx.log(
        f"device       {ctx.device} x{dist.world_size()}  precision {ctx.precision}  channels_last {ctx.channels_last}"
    )
    ctx.log(
        f"data         {len(train_pairs)} train / {len(val_pairs)} validation / {len(test_pairs)} test pairs  "
        f"backend {cfg.backend}"
    )
    ctx.log(
        f"stages       {', '.join(f'{s} ({cfg.stage_epochs(s)} epochs)' for s in stages)}  batch {cfg.batch_size}  crop {cfg.crop_size}"
    )
    if not cfg.needs_teacher and cfg.stage != "reconstruction":
        ctx.log("             no distillation: the reconstruction branch is not trained and no teacher runs")
    if cfg.student_init == "teacher" and cfg.stage != "reconstruction":
        ctx.log("             the harmonization branch starts from the reconstruction branch's backbone")
    ctx.log(
        f"model        {counts['total']:,} parameters (backbone {counts['backbone']:,}, GIFT {counts['gift']:,}); sites {list(cfg.model.gift_sites)}"
    )
    ctx.log(
        f"loss         {cfg.loss.harmonization} + {cfg.loss.distill_weight} x {cfg.loss.distill} on {list(cfg.loss.distill_sites)}"
    )
    if "harmonization" not in stages:
        return
    every = f"every {cfg.eval_every} epochs and " if cfg.eval_every else ""
    if val_pairs:
        held = f"{cfg.val_fraction:g} of the train list's real images"
        ctx.log(f"validation   {every}at the end, on {held}; {BEST_FILE} is selected on it")
    else:
        ctx.log(
            f"validation   none (--val-fraction {cfg.val_fraction:g} holds out no image): no best model is "
            f"selected; the result is {MODEL_FILE}, the last weights"
        )
    if test_pairs:
        ctx.log(f"test         {every}at the end, for reporting only (nothing is selected on it)")
