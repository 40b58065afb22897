"""Evaluation during training: validation and test tables, best-model (on validation), samples, loss plot.

It must not change training: the model runs in eval mode under inference mode (no BatchNorm
statistics move), and every random stream training draws from (torch CPU and CUDA, numpy,
Python's) is put back as it was, so a run with evaluations ends with the weights of one without.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Iterator

import numpy as np
import torch
from rich.console import Console

from giftnet.evaluate import evaluate, format_table
from giftnet.metrics import to_255
from giftnet.model import GiftNet
from giftnet.pipeline.loaders import make_eval_loader
from giftnet.protocols import Protocol, settings
from giftnet.training import distributed as dist
from giftnet.training.checkpoint import Progress
from giftnet.training.monitor import now_utc, plot_losses, save_grid
from giftnet.training.runfolder import BEST_FILE
from giftnet.weights import save_weights


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the torch (CPU, CUDA), numpy and Python random states on exit."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def make_evaluator(ctx, val_pairs: list, test_pairs: list):
    """evaluate(model, progress) for the loop (None when there is neither a validation nor a test
    split). Rank 0 scores; the others wait for it. best-model is selected on the validation split
    only; the test split is scored for reporting."""
    if not val_pairs and not test_pairs:
        return None
    cfg = ctx.cfg
    splits = [(name, pairs) for name, pairs in (("validation", val_pairs), ("test", test_pairs)) if pairs]

    def on_eval(model: GiftNet, progress: Progress) -> None:
        if dist.is_main():
            scored = []
            with ctx.signals.interrupting(), preserved_rng():  # a signal stops the scoring at once
                ctx.folder.hook("eval-start")
                for split, pairs in splits:
                    ctx.log(f"evaluating at step {progress.step} on {len(pairs)} {split} pairs")
                    results = evaluate(
                        model, pairs, batch_size=cfg.eval_batch_size, size=cfg.eval_size, device=ctx.device,
                        backend=cfg.backend, num_workers=cfg.workers, progress=True, precision=ctx.precision,
                        description=f"{split} step {progress.step}",
                    )  # fmt: skip
                    scored.append((split, results))
                grid = sample_grid(ctx, model, splits[0][1])
            for split, results in scored:  # the files are written outside it
                record(ctx, model, progress, split, results)
            write_samples(ctx, progress, grid)
        dist.barrier()

    return on_eval


def sample_grid(ctx, model: GiftNet, pairs: list) -> tuple[torch.Tensor, ...]:
    loader = make_eval_loader(
        pairs[:4], batch_size=4, size=ctx.cfg.eval_size, device=ctx.device, backend=ctx.cfg.backend, num_workers=0
    )
    batch = next(iter(loader))
    with eval_mode(model):
        pred = to_255(model(batch["composite"], batch["mask"])["images"].float())
    return batch["composite_255"], pred, batch["real_255"], batch["mask"]


def record(ctx, model: GiftNet, progress: Progress, split: str, results: dict) -> None:
    """One split's files: its eval.jsonl line, then (validation only) best-model if it is better."""
    folder = ctx.folder
    ctx.log(f"{split} split at step {progress.step}:")
    Console().print(format_table(results, settings(Protocol("fixed", ctx.cfg.eval_size), "max", "pred")))
    folder.append("eval", {"stage": "harmonization", "step": progress.step, "split": split, "time": now_utc(),
                           **results})  # fmt: skip
    mse = results["model"]["all"]["mse"]
    if split == "validation" and mse < progress.best:
        progress.best = mse
        meta = {"step": str(progress.step), "mse": repr(mse), "selected_on": "validation split"}
        folder.export("best", lambda p: save_weights(model, p, meta), folder / BEST_FILE)


def write_samples(ctx, progress: Progress, grid: tuple[torch.Tensor, ...]) -> None:
    """The evaluation's last files: the sample grid, then loss.png."""
    folder = ctx.folder
    with folder.png("sample", folder.sample(progress.step)) as f:
        save_grid(f, *grid)
    write_plot(folder, ctx.cfg.loss.distill_weight)


def write_plot(folder, distill_weight: float) -> bool:
    """loss.png from stats.jsonl (updated at each evaluation and at the end of the run); the
    distillation term is drawn as it enters the loss, weighted by `distill_weight`."""
    buf = io.BytesIO()
    if not plot_losses(folder.read_log(folder.stats), buf, distill_weight):
        return False
    folder.write("plot", folder / "loss.png", buf.getvalue())
    return True
