"""What a person watches: a rich progress display (or, when stdout is not a terminal, one plain
timestamped line per log interval), stats.jsonl, sample grids, a loss curve."""

from __future__ import annotations

import datetime
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from giftnet.training.runfolder import RunFolder


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Monitor:
    """Progress bar and logs of one stage; a silent no-op on ranks other than 0."""

    def __init__(self, folder: RunFolder, stage: str, total_steps: int, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.folder, self.stage = folder, stage
        self.console = Console()
        self.total, self.start_step, self._start_time = total_steps, start_step, time.perf_counter()
        self._t0, self._images = time.perf_counter(), 0
        self.progress = None
        self.plain = not self.console.is_terminal  # SLURM, `> log`: plain lines, no bar
        if enabled and not self.plain:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )
            self.task = self.progress.add_task(stage, total=total_steps, completed=start_step, info="")
            self.progress.start()
        self.tensorboard = tensorboard_writer(folder.path) if enabled else None

    def count(self, images: int) -> None:
        self._images += images

    def log(self, step: int, epoch: int, lr: float, values: dict[str, float], device: torch.device) -> None:
        """Record one log interval (values are already host floats) and refresh the display."""
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = self._images / max(now - self._t0, 1e-9)
        self._t0, self._images = now, 0
        record = {"stage": self.stage, "step": step, "epoch": epoch, "lr": lr, "images_per_s": rate, **values}
        if device.type == "cuda":
            record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        record["time"] = now_utc()
        self.folder.append("stats", record)
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.tensorboard.add_scalar(f"{self.stage}/{key}", value, step)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items() if k in ("total", "har", "dis", "skipped"))
        mem = f"  mem {record['gpu_mem_gb']:.1f}G" if "gpu_mem_gb" in record else ""
        if self.plain:
            parts = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(f"{record['time']}  {self.stage} epoch {epoch} step {step}/{self.total}  {parts}  lr {lr:.3g}  "
                  f"{rate:.1f} img/s  eta {self.eta(step)}{mem}", flush=True)  # fmt: skip
        elif self.progress is not None:  # None once closed
            info = f"ep {epoch} lr {lr:.0e} {shown} {rate:.1f} img/s{mem}"
            self.progress.update(self.task, completed=step, info=info)

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return "?"
        left = (time.perf_counter() - self._start_time) / done * (self.total - step)
        return str(datetime.timedelta(seconds=round(left)))

    def advance(self, step: int) -> None:
        if self.progress is not None and step % 5 == 0:
            self.progress.update(self.task, completed=step)

    def print(self, *args) -> None:
        if self.enabled:
            self.console.print(*args)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def tensorboard_writer(run: Path):
    """A TensorBoard writer into RUN/tensorboard when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run / "tensorboard"))


def save_grid(
    f: io.BytesIO, composite: torch.Tensor, pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor
) -> None:
    """A PNG into `f` with one row per sample: composite | harmonised | real | mask (images 0-255)."""
    rows = []
    for i in range(min(4, composite.shape[0])):
        tiles = [t[i].float() for t in (composite, pred, real)]
        tiles.append(mask[i].float().expand(3, -1, -1) * 255.0)
        rows.append(torch.cat(tiles, dim=2))
    grid = torch.cat(rows, dim=1).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(np.ascontiguousarray(grid)).save(f, format="PNG")


def plot_losses(records: list[dict], out: io.BytesIO) -> bool:
    """Loss curves per stage (in stage order) from stats.jsonl records as a PNG into `out`;
    False when matplotlib is missing or there is nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    order = ("reconstruction", "harmonization")
    stages = [s for s in order if any(r.get("stage") == s for r in records)]
    if not stages:
        return False
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        recs = [r for r in records if r["stage"] == stage]
        for key in ("total", "har", "dis"):
            pts = [(r["step"], r[key]) for r in recs if key in r and r[key] > 0]  # a log axis
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key)
        ax.set(title=stage, xlabel="step", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100, format="png")
    plt.close(fig)
    return True
