"""`python -m giftnet.evaluate`: the paper's Table 1 (MSE, fMSE, PSNR, fPSNR, fSSIM per subset and All).

Protocols (giftnet.protocols, docs/metrics.md): "fixed" resizes composite, real image and mask
to `size` x `size` (iSSAM's "Fixed256" at 256, the default), "longest1024" and "full" score at
(at most) 1024 px or at full resolution. The prediction is de-normalised to 0-255 and clamped
(not rounded); metrics per image from giftnet.metrics (PSNR peak: the real image's max, iSSAM's
convention, or 255; fSSIM data range: the prediction's max - min, CDTNet's, or 255); a row is
the mean over its images and "All" the mean over every image of every subset. The composite
itself is scored the same way as the baseline row.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch import nn

from giftnet.allocator import configure_allocator
from giftnet.choices import BACKENDS
from giftnet.errors import UsageError, run_cli
from giftnet.fileio import InputGuard, atomic_write_text, output_errors
from giftnet.imagenet import to_255
from giftnet.metrics import FSSIM_RANGES, PSNR_PEAKS, image_metrics
from giftnet.pipeline.ihd import list_files_for, read_pairs
from giftnet.pipeline.images import save_image
from giftnet.pipeline.loaders import resolve_backend
from giftnet.pipeline.pairs import DatasetError, Pair
from giftnet.progress import DEFAULT_EVERY_S, progress_bar
from giftnet.protocols import PROTOCOLS, Protocol, at_original_size, pad_to_multiple, protocol_loader, settings
from giftnet.runtime import (  # re-exported: the names this module held before giftnet.runtime
    PRECISIONS,
    autocast_context,
    check_device,
    default_device,
    load_model,
    model_device,
)

METRICS = ("mse", "fmse", "psnr", "fpsnr", "fssim")
ALL = "all"


# A command-line argument that cannot work; the message names it (the CLIs exit with status 2).
InputError = UsageError


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


def _save_pngs(
    root: Path,
    pairs: Sequence[Pair],
    indices: list[int],
    images_255: torch.Tensor,
    composites_255: torch.Tensor,
    guard: InputGuard,
) -> None:
    """Each harmonised image at its composite's original size (giftnet.protocols.at_original_size)."""
    for index, pred, comp in zip(indices, images_255, composites_255, strict=True):
        pair = pairs[index]
        path = root / pair.subset / f"{pair.name}.png"
        guard.check(path, "--save-images")
        with output_errors(path, "--save-images"):
            save_image(path, Image.fromarray(at_original_size(pred, comp, pair), "RGB"))


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
    protocol: Protocol | None = None,
    psnr_peak: str = "max",
    fssim_range: str = "pred",
    description: str = "evaluate",
    progress_every: float = DEFAULT_EVERY_S,
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Score `model` and the composites on `pairs`: {"model": rows, "composite": rows}.

    rows = {SUBSET: {"mse", "fmse", "psnr", "fpsnr", "fssim", "n"}, ..., "all": {...}}, subsets
    sorted. `protocol` defaults to Protocol("fixed", size); `psnr_peak` ("max" or "255") and
    `fssim_range` ("pred" or "255") pick the metric conventions (giftnet.metrics).
    `model` (on `device`; None means the model's own device) is called as
    model(image_normalised, mask)["images"] under inference mode in eval mode; its training mode
    is restored afterwards, so a trainer can call this between epochs. `save_images` writes the
    harmonised images at the composite's original size as SAVE_IMAGES/SUBSET/NAME.png (NAME:
    composite stem). `progress`: a bar on a terminal, else a plain timestamped line (named
    `description`) at most every `progress_every` seconds (giftnet.progress).
    """
    protocol = Protocol("fixed", size) if protocol is None else protocol
    if protocol.name == "fixed" and (protocol.size < 8 or protocol.size % 8):
        raise InputError(f"size must be a positive multiple of 8 (the network pools three times), got {protocol.size}")
    device = model_device(model) if device is None else torch.device(device)
    amp = autocast_context(device, precision)
    loader = protocol_loader(
        pairs, protocol, batch_size=batch_size, device=device, backend=backend, num_workers=num_workers
    )
    conventions = {"psnr_peak": psnr_peak, "fssim_range": fssim_range}
    rows = {"model": _Rows(), "composite": _Rows()}
    guard = None if save_images is None else InputGuard(p for pr in pairs for p in (pr.composite, pr.mask, pr.real))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), progress_bar(progress, len(pairs), description, every_s=progress_every) as advance:
            for batch in loader:
                indices = batch["index"].cpu().tolist()
                subsets = [pairs[i].subset for i in indices]
                height, width = batch["composite"].shape[-2:]
                with amp:  # padded to a multiple of 8 and cropped back ("fixed" sizes need neither)
                    out = model(pad_to_multiple(batch["composite"]), pad_to_multiple(batch["mask"]))["images"]
                pred = to_255(out[:, :, :height, :width].float())
                mask, real, comp = batch["mask"].float(), batch["real_255"].float(), batch["composite_255"].float()
                rows["model"].add(subsets, image_metrics(pred, real, mask, **conventions))
                rows["composite"].add(subsets, image_metrics(comp, real, mask, **conventions))
                if save_images is not None and guard is not None:  # both or neither
                    _save_pngs(Path(save_images), pairs, indices, pred, comp, guard)
                advance(len(indices))
    finally:
        model.train(was_training)
    return {name: acc.table() for name, acc in rows.items()}


def format_table(
    results: dict[str, dict[str, dict[str, float | int]]], conventions: dict[str, str] | None = None
) -> Table:
    """The results of `evaluate` as a rich Table: composite and model rows per subset, then All.

    `conventions` is giftnet.protocols.settings(...) of the run (default: Fixed256, iSSAM's PSNR
    peak, CDTNet's fSSIM range); the title names the protocol and the caption the conventions.
    """
    conventions = conventions or settings(Protocol(), "max", "pred")
    table = Table(
        title=f"Harmonisation quality ({conventions['protocol']})",
        caption=f"PSNR peak: {conventions['psnr_peak']}; fSSIM data range: {conventions['fssim_range']}. "
        "Lower MSE/fMSE, higher PSNR/fPSNR/fSSIM is better.",
    )
    table.add_column("Subset")
    table.add_column("Input")
    for name in ("MSE", "fMSE", "PSNR", "fPSNR", "fSSIM", "n"):
        table.add_column(name, justify="right")
    subsets = [s for s in results["composite"] if s != ALL] + [ALL]
    for i, subset in enumerate(subsets):
        for j, kind in enumerate(("composite", "model")):
            row = results[kind].get(subset)
            if row is None:
                continue
            label = ("All" if subset == ALL else subset) if j == 0 else ""
            cells = (
                f"{row['mse']:.2f}",
                f"{row['fmse']:.2f}",
                f"{row['psnr']:.2f}",
                f"{row['fpsnr']:.2f}",
                f"{row['fssim']:.4f}",
            )
            table.add_row(label, kind, *cells, str(row["n"]), end_section=j == 1 and i < len(subsets) - 1)
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m giftnet.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="dataset root in the iHarmony4 layout")
    p.add_argument("--subsets", nargs="+", default=None, help="subset folders (default: all with a test list)")
    p.add_argument("--weights", type=Path, required=True, help="GiftNet weights (.safetensors)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers as JSON here")
    p.add_argument(
        "--save-images", type=Path, default=None, help="write harmonised PNGs, at the original size, to DIR/SUBSET/"
    )
    p.add_argument("--batch-size", type=int, default=16, help="pairs per batch (protocol fixed only; others use 1)")
    p.add_argument("--size", type=int, default=256, help="protocol fixed: evaluation resolution (multiple of 8)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="fixed",
        help="fixed: size x size (iSSAM's Fixed256); longest1024: longest side at most 1024; full: full resolution",
    )
    p.add_argument(
        "--psnr-peak",
        choices=PSNR_PEAKS,
        default="max",
        help="PSNR peak: the real image's max (iSSAM) or 255 (PCT-Net)",
    )
    p.add_argument(
        "--fssim-range",
        choices=FSSIM_RANGES,
        default="pred",
        help="fSSIM data range: prediction max - min (CDTNet, the paper's Table 2) or 255",
    )
    p.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="data loader: DALI or PyTorch")
    p.add_argument("--workers", type=int, default=2, help="data loader workers / DALI threads")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (or, without a terminal, lines)")
    p.add_argument(
        "--progress-every",
        type=float,
        default=DEFAULT_EVERY_S,
        metavar="SECONDS",
        help="without a terminal (SLURM, > log): a timestamped progress line at most this often (default: 30)",
    )
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if not args.progress_every >= 0:  # NaN too
        raise InputError(f"--progress-every must be >= 0 seconds, got {args.progress_every}")
    if args.size < 8 or args.size % 8:
        raise InputError(f"--size must be a positive multiple of 8, got {args.size}")
    try:
        resolve_backend(args.backend)
    except RuntimeError as exc:  # DALI asked for but not installed
        raise InputError(f"--backend {args.backend}: {exc}") from None


def _guard_outputs(args: argparse.Namespace, pairs: Sequence[Pair]) -> None:
    """Refuse a --json that is an input (the weights, a list file, an image): it would be replaced."""
    if args.json is None:
        return
    lists = [f for split in ("test",) for f, _, _ in list_files_for(args.data, args.subsets, split)]
    inputs = [args.weights, *lists, *(p for pair in pairs for p in (pair.composite, pair.mask, pair.real))]
    InputGuard(inputs).check(args.json, "--json")


def main(argv: Sequence[str] | None = None) -> int:
    configure_allocator()
    args = build_parser().parse_args(argv)
    return run_cli("evaluate", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    _check_args(args)
    device = check_device(args.device)
    autocast_context(device, args.precision)  # refuse an unsupported precision before any work
    model = load_model(args.weights, device)
    if not args.data.is_dir():
        raise DatasetError(f"{args.data}: dataset root is not a directory")
    pairs = read_pairs(args.data, args.subsets, "test")
    _guard_outputs(args, pairs)
    protocol = Protocol(args.protocol, args.size)
    conventions = settings(protocol, args.psnr_peak, args.fssim_range)
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
        progress_every=args.progress_every,
        precision=args.precision,
        protocol=protocol,
        psnr_peak=args.psnr_peak,
        fssim_range=args.fssim_range,
    )
    if args.json is not None:
        record = {"settings": conventions, **results}
        with output_errors(args.json, "--json"):
            atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    Console().print(format_table(results, conventions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
