"""What a person watches: a rich progress display, stats.jsonl, sample grids, a loss curve."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Monitor:
    """Progress bar and logs of one stage; a silent no-op on ranks other than 0."""

    def __init__(self, run: Path, stage: str, total_steps: int, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.run, self.stage = run, stage
        self.console = Console()
        self.stats_path = run / "stats.jsonl"
        self._t0, self._images, self._last = time.perf_counter(), 0, {}
        self.progress = None
        if enabled:
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
        self.tensorboard = tensorboard_writer(run) if enabled else None

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
        with self.stats_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.tensorboard.add_scalar(f"{self.stage}/{key}", value, step)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items() if k in ("total", "har", "dis", "skipped"))
        mem = f"  mem {record['gpu_mem_gb']:.1f}G" if "gpu_mem_gb" in record else ""
        self.progress.update(self.task, completed=step, info=f"ep {epoch} lr {lr:.0e} {shown} {rate:.1f} img/s{mem}")

    def advance(self, step: int) -> None:
        if self.enabled and step % 5 == 0:
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


def truncate_stats(path: Path, stage: str, after_step: int) -> None:
    """On resume, drop the records a killed run wrote after its last checkpoint."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if not (rec.get("stage") == stage and rec.get("step", 0) > after_step):
            keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


def save_grid(path: Path, composite: torch.Tensor, pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> None:
    """A PNG with one row per sample: composite | harmonised | real | mask (images 0-255)."""
    rows = []
    for i in range(min(4, composite.shape[0])):
        tiles = [t[i].float() for t in (composite, pred, real)]
        tiles.append(mask[i].float().expand(3, -1, -1) * 255.0)
        rows.append(torch.cat(tiles, dim=2))
    grid = torch.cat(rows, dim=1).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(grid)).save(path)


def plot_losses(stats_path: Path, out: Path) -> bool:
    """Loss curves per stage from stats.jsonl; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = [json.loads(line) for line in stats_path.read_text().splitlines() if line.strip()]
    stages = sorted({r["stage"] for r in records})
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        recs = [r for r in records if r["stage"] == stage]
        for key in ("total", "har", "dis"):
            pts = [(r["step"], r[key]) for r in recs if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key)
        ax.set(title=stage, xlabel="step", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True
