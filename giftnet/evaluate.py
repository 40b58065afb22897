"""`python -m giftnet.evaluate`: the paper's Table 1 (MSE, fMSE, PSNR, fSSIM per subset and All).

The "Fixed256" protocol of design.md section 6: composite, real image and mask resized to
`size` x `size` by pipeline.loaders.make_eval_loader; the prediction de-normalised to 0-255 and
clamped (not rounded); metrics per image from giftnet.metrics (PSNR peak = the real image's max,
iSSAM's convention); a row is the mean over its images and "All" the mean over every image of
every subset. The composite itself is scored the same way as the baseline row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from torch import nn

from giftnet.allocator import configure_allocator
from giftnet.errors import UsageError
from giftnet.fileio import atomic_write_bytes
from giftnet.metrics import image_metrics, to_255
from giftnet.weights import WeightsError, load_weights
from pipeline.ihd import read_pairs
from pipeline.loaders import BACKENDS, make_eval_loader, resolve_backend
from pipeline.pairs import DatasetError, Pair

METRICS = ("mse", "fmse", "psnr", "fssim")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
ALL = "all"


# A command-line argument that cannot work; the message names it (the CLIs exit with status 2).
InputError = UsageError


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for "bf16"/"fp16", a no-op for "fp32"; unsupported combinations are refused."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise InputError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp16")
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise InputError(f"precision {precision}: autocast is not available on {device.type}")
    return torch.autocast(device.type, dtype=dtype)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.1f} img/s", style="progress.data.speed")


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Any]:
    """Yield `advance(n)`; a rich bar when enabled and a live display can start, else a no-op."""
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, transient=True)
    try:
        bar.start()
    except LiveError:  # another live display that cannot nest: go on without a bar
        yield lambda n: None
        return
    try:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
    finally:
        bar.stop()


class _Rows:
    """Per-image metrics grouped by subset, reduced to the table's means."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}

    def add(self, subsets: Sequence[str], metrics: dict[str, torch.Tensor]) -> None:
        lists = {k: metrics[k].detach().double().cpu().tolist() for k in METRICS}
        for i, subset in enumerate(subsets):
            row = self.values.setdefault(subset, {k: [] for k in METRICS})
            for k in METRICS:
                row[k].append(lists[k][i])

    def table(self) -> dict[str, dict[str, float | int]]:
        def row(columns: dict[str, list[float]]) -> dict[str, float | int]:
            out: dict[str, float | int] = {k: float(np.mean(columns[k])) for k in METRICS}
            out["n"] = len(columns["mse"])
            return out

        result = {name: row(self.values[name]) for name in sorted(self.values)}
        result[ALL] = row({k: [v for name in sorted(self.values) for v in self.values[name][k]] for k in METRICS})
        return result


def _save_pngs(root: Path, pairs: Sequence[Pair], indices: list[int], images_255: torch.Tensor) -> None:
    arrays = images_255.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for index, array in zip(indices, arrays, strict=True):
        pair = pairs[index]
        folder = root / pair.subset
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, "RGB").save(folder / f"{pair.name}.png")


def evaluate(
    model: nn.Module,
    pairs: Sequence[Pair],
    *,
    batch_size: int = 16,
    size: int = 256,
    device: str | torch.device | None = None,
    backend: str = "auto",
    num_workers: int = 2,
    save_images: Path | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Score `model` and the composites on `pairs`: {"model": rows, "composite": rows}.

    rows = {SUBSET: {"mse", "fmse", "psnr", "fssim", "n"}, ..., "all": {...}}, subsets sorted.
    `model` (on `device`; None means the model's own device) is called as
    model(image_normalised, mask)["images"] under inference mode in eval mode; its training mode
    is restored afterwards, so a trainer can call this between epochs. `save_images` writes the
    harmonised images at the evaluation size as SAVE_IMAGES/SUBSET/NAME.png (NAME: composite stem).
    """
    if size < 8 or size % 8:
        raise InputError(f"size must be a positive multiple of 8 (the network pools three times), got {size}")
    device = model_device(model) if device is None else torch.device(device)
    amp = autocast_context(device, precision)
    loader = make_eval_loader(
        pairs, batch_size=batch_size, size=size, device=device, backend=backend, num_workers=num_workers
    )
    rows = {"model": _Rows(), "composite": _Rows()}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), progress_bar(progress, len(pairs), "evaluate") as advance:
            for batch in loader:
                indices = batch["index"].cpu().tolist()
                subsets = [pairs[i].subset for i in indices]
                with amp:
                    out = model(batch["composite"], batch["mask"])["images"]
                pred = to_255(out.float())
                mask, real = batch["mask"].float(), batch["real_255"].float()
                rows["model"].add(subsets, image_metrics(pred, real, mask))
                rows["composite"].add(subsets, image_metrics(batch["composite_255"].float(), real, mask))
                if save_images is not None:
                    _save_pngs(Path(save_images), pairs, indices, pred)
                advance(len(indices))
    finally:
        model.train(was_training)
    return {name: acc.table() for name, acc in rows.items()}


def format_table(results: dict[str, dict[str, dict[str, float | int]]]) -> Table:
    """The results of `evaluate` as a rich Table: composite and model rows per subset, then All."""
    table = Table(
        title="Harmonisation quality (Fixed256)",
        caption="PSNR peak: the real image's max (iSSAM). Lower MSE/fMSE, higher PSNR/fSSIM is better.",
    )
    table.add_column("Subset")
    table.add_column("Input")
    for name in ("MSE", "fMSE", "PSNR", "fSSIM", "n"):
        table.add_column(name, justify="right")
    subsets = [s for s in results["composite"] if s != ALL] + [ALL]
    for i, subset in enumerate(subsets):
        for j, kind in enumerate(("composite", "model")):
            row = results[kind].get(subset)
            if row is None:
                continue
            label = ("All" if subset == ALL else subset) if j == 0 else ""
            cells = (f"{row['mse']:.2f}", f"{row['fmse']:.2f}", f"{row['psnr']:.2f}", f"{row['fssim']:.4f}")
            table.add_row(label, kind, *cells, str(row["n"]), end_section=j == 1 and i < len(subsets) - 1)
    return table


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> torch.device:
    """A torch.device for --device, refusing CUDA where there is none."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device!r}: not a device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    return dev


def load_model(path: Path, device: torch.device) -> nn.Module:
    """load_weights with a clear error for a path that is not a file."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file does not exist")
    return load_weights(path, device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m giftnet.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="dataset root in the iHarmony4 layout")
    p.add_argument("--subsets", nargs="+", default=None, help="subset folders (default: all with a test list)")
    p.add_argument("--weights", type=Path, required=True, help="GiftNet weights (.safetensors)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers as JSON here")
    p.add_argument("--save-images", type=Path, default=None, help="write harmonised PNGs to DIR/SUBSET/")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="evaluation resolution (multiple of 8)")
    p.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="data loader: DALI or PyTorch")
    p.add_argument("--workers", type=int, default=2, help="data loader workers / DALI threads")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.size < 8 or args.size % 8:
        raise InputError(f"--size must be a positive multiple of 8, got {args.size}")
    try:
        resolve_backend(args.backend)
    except RuntimeError as exc:  # DALI asked for but not installed
        raise InputError(f"--backend {args.backend}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    configure_allocator()
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        _check_args(args)
        device = check_device(args.device)
        model = load_model(args.weights, device)
        if not args.data.is_dir():
            raise DatasetError(f"{args.data}: dataset root is not a directory")
        pairs = read_pairs(args.data, args.subsets, "test")
        results = evaluate(
            model,
            pairs,
            batch_size=args.batch_size,
            size=args.size,
            device=device,
            backend=args.backend,
            num_workers=args.workers,
            save_images=args.save_images,
            progress=not args.no_progress,
            precision=args.precision,
        )
        if args.json is not None:
            atomic_write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())
    except (DatasetError, WeightsError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output that cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console.print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
