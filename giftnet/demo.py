"""`python -m giftnet.demo`: the whole method on one real photograph, in about a minute on a CPU.

A photo bundled with scikit-image gets an elliptical object mask and a colour cast on that
object (the composite). The reconstruction branch (teacher) learns to reproduce the real photo,
then GiftNet learns to harmonise the composite with relation distillation from the frozen
teacher. It fits a single pair, so it shows the mechanics (parameter counts, every loss
component, metrics of composite vs harmonised), not generalisation: that is train.py's job.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from giftnet.config import LossConfig, ModelConfig
from giftnet.imagenet import normalise, to_255
from giftnet.losses import total_loss
from giftnet.metrics import image_metrics
from giftnet.model import GiftNet, build_teacher, parameter_breakdown


def demo_pair(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(composite, mask, real) as float 0-255 / 0-1 tensors of shape (1, C, size, size)."""
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC)
    real = torch.from_numpy(np.asarray(photo, dtype=np.float32)).permute(2, 0, 1)[None]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = ((((xx + 0.05) / 0.38) ** 2 + ((yy + 0.35) / 0.45) ** 2) <= 1).float()[None, None]
    cast = torch.tensor([1.25, 0.95, 0.7])[None, :, None, None]
    composite = mask * (real * cast).clamp(0, 255) + (1 - mask) * real
    return composite, mask, real


def fit(model: GiftNet, inputs, target, mask, loss_cfg, steps, teacher=None, log=None) -> dict[str, float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    parts = {}
    for step in range(steps):
        flip = step % 2 == 1  # the same flip for image, mask and target
        x, m, y = (t.flip(-1) if flip else t for t in (inputs, mask, target))
        t_feats = None
        if teacher is not None:
            with torch.no_grad():
                t_feats = teacher(y, m)
        parts = total_loss(model(x, m), y, m, loss_cfg, t_feats)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()
        if log is not None and (step + 1) % max(steps // 4, 1) == 0:
            log(step + 1, {k: v.item() for k, v in parts.items()})
    return {k: v.item() for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image size (multiple of 8)")
    parser.add_argument("--steps", type=int, default=60, help="optimisation steps per branch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size % 8 or args.size < 32:
        parser.error("--size must be a multiple of 8, at least 32")
    torch.manual_seed(args.seed)
    console = Console()
    composite, mask, real = demo_pair(args.size)
    x, y = normalise(composite), normalise(real)

    student, teacher = GiftNet(ModelConfig()), build_teacher()
    counts = parameter_breakdown(student)
    table = Table(title="GiftNet parameters (trainable)")
    for col in ("part", "parameters"):
        table.add_column(col)
    for name in ("encoder", "decoder", "backbone", "gift", "total"):
        table.add_row(name, f"{counts[name]:,}")
    console.print(table)
    console.print("iSSAM backbone reference count: 2,185,340")

    def log(branch):
        return lambda step, p: console.print(
            f"  {branch} step {step:3d}: " + "  ".join(f"{k} {v:.4g}" for k, v in p.items())
        )

    start = time.perf_counter()
    console.print(f"[bold]1. reconstruction branch[/] (real -> real, {args.steps} steps at {args.size}px)")
    fit(teacher, y, y, mask, LossConfig(distill="none", distill_sites=()), args.steps, log=log("teacher"))
    teacher.eval().requires_grad_(False)
    console.print("[bold]2. harmonization branch[/] (composite -> real, relation distillation from the frozen teacher)")
    fit(student, x, y, mask, LossConfig(), args.steps, teacher=teacher, log=log("giftnet"))
    student.eval()
    with torch.no_grad():
        pred = to_255(student(x, mask)["images"])
    rows = {"composite": image_metrics(composite, real, mask), "harmonised": image_metrics(pred, real, mask)}
    table = Table(title=f"Composite vs harmonised, against the real photo ({time.perf_counter() - start:.0f} s)")
    for col in ("image", "MSE", "fMSE", "PSNR", "fSSIM"):
        table.add_column(col)
    for name, m in rows.items():
        table.add_row(name, *(f"{m[k].item():.4g}" for k in ("mse", "fmse", "psnr", "fssim")))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
