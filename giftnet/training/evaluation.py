"""Evaluation during training: the test-split table, best-model, a sample grid, the loss plot.

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
from giftnet.protocols import Protocol, settings
from giftnet.training import distributed as dist
from giftnet.training.checkpoint import Progress
from giftnet.training.monitor import now_utc, plot_losses, save_grid
from giftnet.training.runfolder import BEST_FILE
from giftnet.weights import save_weights
from pipeline.loaders import make_eval_loader


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


def make_evaluator(ctx, test_pairs: list):
    """evaluate(model, progress) for the loop (None when there is no test split). Rank 0 scores;
    the others wait for it."""
    if not test_pairs:
        return None
    cfg = ctx.cfg

    def on_eval(model: GiftNet, progress: Progress) -> None:
        if dist.is_main():
            ctx.log(f"evaluating at step {progress.step} on {len(test_pairs)} test pairs")
            with ctx.signals.interrupting(), preserved_rng():
                ctx.folder.hook("eval-start")
                results = evaluate(
                    model, test_pairs, batch_size=cfg.eval_batch_size, size=cfg.eval_size, device=ctx.device,
                    backend=cfg.backend, num_workers=cfg.workers, progress=False, precision=ctx.precision,
                )  # fmt: skip
                grid = sample_grid(ctx, model, test_pairs)
            record(ctx, model, progress, results, grid)
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


def record(ctx, model: GiftNet, progress: Progress, results: dict, grid: tuple[torch.Tensor, ...]) -> None:
    """The evaluation's files, in this order: eval.jsonl, best-model (if better), samples, loss.png."""
    folder = ctx.folder
    Console().print(format_table(results, settings(Protocol("fixed", ctx.cfg.eval_size), "max", "pred")))
    folder.append("eval", {"stage": "harmonization", "step": progress.step, "time": now_utc(), **results})
    mse = results["model"]["all"]["mse"]
    if mse < progress.best:
        progress.best = mse
        meta = {"step": str(progress.step), "mse": repr(mse), "selected_on": "test split"}
        folder.export("best", lambda p: save_weights(model, p, meta), folder / BEST_FILE)
    with folder.png("sample", folder.sample(progress.step)) as f:
        save_grid(f, *grid)
    write_plot(folder)


def write_plot(folder) -> bool:
    """loss.png from stats.jsonl (updated at each evaluation and at the end of the run)."""
    buf = io.BytesIO()
    if not plot_losses(folder.read_log(folder.stats), buf):
        return False
    folder.write("plot", folder / "loss.png", buf.getvalue())
    return True
