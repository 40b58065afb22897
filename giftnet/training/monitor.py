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
from PIL import Image, ImageDraw
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from giftnet.progress import now_utc

__all__ = ["Monitor", "grid_image", "loss_series", "now_utc", "plot_losses", "save_grid"]

if TYPE_CHECKING:
    from giftnet.training.runfolder import RunFolder


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


GRID_COLUMNS = ("composite", "mask", "ours", "real")
LABEL_HEIGHT = 12


def blended(composite: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The output as harmonize writes it: composite + mask * (prediction - composite), rounded to
    0-255, and the composite itself where the mask is 0 (images 0-255, mask 0-1)."""
    mask = mask.float()
    out = (composite + mask * (pred - composite)).round().clamp(0, 255)
    return torch.where(mask > 0, out, composite)


def grid_image(composite: torch.Tensor, pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """HxWx3 uint8: a label row (GRID_COLUMNS), then one row per sample (up to 4):
    composite | mask | ours (blended as harmonize's output) | real."""
    rows = []
    for i in range(min(4, composite.shape[0])):
        ours = blended(composite[i].float(), pred[i].float(), mask[i])
        tiles = [composite[i].float(), mask[i].float().expand(3, -1, -1) * 255.0, ours, real[i].float()]
        rows.append(torch.cat(tiles, dim=2))
    body = torch.cat(rows, dim=1).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    tile_w = composite.shape[-1]
    header = Image.new("RGB", (body.shape[1], LABEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    for k, label in enumerate(GRID_COLUMNS):
        draw.text((k * tile_w + 2, 0), label, fill=(0, 0, 0))
    return np.ascontiguousarray(np.concatenate([np.asarray(header), body], axis=0))


def save_grid(
    f: io.BytesIO, composite: torch.Tensor, pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor
) -> None:
    """grid_image as a PNG into `f` (images 0-255, mask 0-1)."""
    Image.fromarray(grid_image(composite, pred, real, mask)).save(f, format="PNG")


STAGE_PLOT_ORDER = ("reconstruction", "harmonization")


def loss_series(records: list[dict], distill_weight: float) -> list[tuple[str, dict[str, tuple[list, list]]]]:
    """What loss.png draws: per stage in training order, {label: (steps, values)}: the total, the
    harmonization term and the distillation term as it enters the total (distill_weight x dis).
    Only positive values (a log axis)."""
    out = []
    for stage in STAGE_PLOT_ORDER:
        recs = [r for r in records if r.get("stage") == stage]
        if not recs:
            continue
        series: dict[str, tuple[list, list]] = {}
        for key, label, scale in (
            ("total", "total", 1.0),
            ("har", "har", 1.0),
            ("dis", f"{distill_weight:g} x dis", distill_weight),
        ):
            pts = [(r["step"], r[key] * scale) for r in recs if key in r and r[key] * scale > 0]
            if pts:
                series[label] = ([s for s, _ in pts], [v for _, v in pts])
        out.append((stage, series))
    return out


def plot_losses(records: list[dict], out: io.BytesIO, distill_weight: float) -> bool:
    """loss_series as a PNG into `out`, one panel per stage in training order; False when
    matplotlib is missing or there is nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    stages = loss_series(records, distill_weight)
    if not stages:
        return False
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
    for ax, (stage, series) in zip(axes[0], stages, strict=True):
        for label, (steps, values) in series.items():
            ax.plot(steps, values, label=label)
        ax.set(title=stage, xlabel="step", yscale="log")
        if series:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100, format="png")
    plt.close(fig)
    return True
