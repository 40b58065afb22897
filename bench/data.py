"""Data benchmark: training pairs per second, DALI pipeline vs PyTorch DataLoader + PIL, side by side.

Both backends run the same augmentation (pipeline.augment: RandomResizedCrop, flip,
keep-background), the same batch size and the same number of CPU workers (DataLoader worker
processes, DALI CPU threads), and deliver normalised batches on the same device. Epochs of the
two backends alternate, so a busy machine slows both alike. Without CUDA, DALI decodes on the CPU;
with CUDA it decodes on the GPU (`device="mixed"`). Without DALI its row says why it was skipped.

    python -m bench.data [--tiny] [--json OUT] [--data IHD_ROOT] [--pairs N] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.common import machine
from pipeline import dali_loader
from pipeline.loaders import make_train_loader
from pipeline.pairs import Pair

FULL = {"pairs": 320, "min_side": 256, "max_side": 512, "batch_size": 16, "crop_size": 256, "epochs": 3}
TINY = {"pairs": 24, "min_side": 64, "max_side": 96, "batch_size": 4, "crop_size": 32, "epochs": 1}


def make_triplets(root: Path, n: int, *, min_side: int, max_side: int, seed: int = 0) -> list[Pair]:
    """n photo-like JPEG triplets in the iHarmony4 layout: smooth scene plus grain, an ellipse mask."""
    rng = np.random.default_rng(seed)
    dirs = [root / "Bench" / d for d in ("composite_images", "masks", "real_images")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    pairs = []
    for k in range(n):
        h, w = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        low = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        real = np.clip(np.asarray(low, np.float32) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        mask = Image.new("L", (w, h))
        cx, cy, rx, ry = (
            rng.uniform(0.2, 0.8) * w,
            rng.uniform(0.2, 0.8) * h,
            w * rng.uniform(0.1, 0.3),
            h * rng.uniform(0.1, 0.3),
        )
        ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        fg = np.asarray(mask) > 0
        comp = real.copy()
        comp[fg] = np.clip(comp[fg] * rng.uniform(0.6, 1.4, 3) + rng.uniform(-30, 30, 3), 0, 255).astype(np.uint8)
        name = f"b{k}_1"
        pair = Pair(dirs[0] / f"{name}_1.jpg", dirs[1] / f"{name}.png", dirs[2] / f"b{k}.jpg", "Bench", f"{name}_1")
        Image.fromarray(comp).save(pair.composite, quality=90)
        mask.save(pair.mask)
        Image.fromarray(real).save(pair.real, quality=90)
        pairs.append(pair)
    return pairs


def _timed_epoch(loader, epoch: int, device: torch.device, max_batches: int | None = None) -> tuple[int, float]:
    """(pairs, seconds) for one epoch, with batches delivered on the device."""
    count, start = 0, time.perf_counter()
    for i, batch in enumerate(loader.epoch(epoch)):
        count += batch["index"].numel()
        if max_batches is not None and i + 1 >= max_batches:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count, time.perf_counter() - start


def compare(
    pairs: list[Pair], *, batch_size: int, crop_size: int, epochs: int, workers: int, device: torch.device
) -> list[dict]:
    """One row per backend: pairs/s over `epochs` timed epochs, after a warm-up epoch each."""
    backends = ["torch", "dali"]
    rows: dict[str, dict] = {}
    loaders = {}
    for name in backends:
        decode = (
            "PIL in worker processes"
            if name == "torch"
            else f"DALI {'GPU (mixed)' if device.type == 'cuda' else 'CPU'}"
        )
        rows[name] = {"backend": name, "decode": decode, "workers": workers, "batch_size": batch_size}
        rows[name] |= {"crop_size": crop_size, "pairs": len(pairs), "epochs": epochs, "device": str(device)}
        if name == "dali" and dali_loader.DALI_IMPORT_ERROR is not None:
            rows[name] |= {"skipped": f"DALI not importable: {dali_loader.DALI_IMPORT_ERROR}", "pairs_per_s": None}
            continue
        loaders[name] = make_train_loader(
            pairs, batch_size=batch_size, crop_size=crop_size, num_workers=workers, device=device, backend=name
        )
        _timed_epoch(loaders[name], 0, device, max_batches=max(2, len(loaders[name]) // 2))  # warm-up
    totals: dict[str, list[float]] = {name: [0, 0.0] for name in loaders}
    for epoch in range(1, epochs + 1):
        order = list(loaders) if epoch % 2 else list(reversed(loaders))
        for name in order:
            n, seconds = _timed_epoch(loaders[name], epoch, device)
            totals[name][0] += n
            totals[name][1] += seconds
            rows[name].setdefault("epoch_pairs_per_s", []).append(round(n / seconds, 1))
    for name, (count, elapsed) in totals.items():
        rows[name]["pairs_per_s"] = round(count / elapsed, 1)
    base = rows["torch"]["pairs_per_s"]
    for row in rows.values():
        row["vs_torch"] = round(row["pairs_per_s"] / base, 2) if row["pairs_per_s"] else None
    return [rows[name] for name in backends]


def run(tiny: bool, *, data: Path | None = None, pairs: int | None = None, workers: int | None = None) -> list[dict]:
    """Benchmark rows (one per backend, each with the machine description); tiny = CI smoke size."""
    cfg = dict(TINY if tiny else FULL)
    if pairs is not None:
        cfg["pairs"] = pairs
    if workers is None:
        workers = 1 if tiny else min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kw = {k: cfg[k] for k in ("batch_size", "crop_size", "epochs")}
    if data is not None:
        from pipeline.ihd import read_pairs

        found = read_pairs(data, None, "train")[: cfg["pairs"]]
        rows = compare(found, workers=workers, device=device, **kw)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
            made = make_triplets(Path(tmp), cfg["pairs"], min_side=cfg["min_side"], max_side=cfg["max_side"])
            rows = compare(made, workers=workers, device=device, **kw)
            for row in rows:
                row["images"] = f"synthetic JPEG q90, {cfg['min_side']}-{cfg['max_side']} px"
    info = machine()
    return [row | info for row in rows]


def _print(rows: list[dict]) -> None:
    info = rows[0]
    print(f"data pipeline benchmark  {info['date']}  git {info['git']}")
    print(f"CPU {info['cpu']} ({info['cores']} cores, load average {info['load_avg_1min']})  GPU {info['gpu']}")
    print(f"torch {info['torch']}  DALI {info['dali']}  Pillow {info['pillow']}")
    print(
        f"{info['pairs']} pairs ({info.get('images', 'dataset')}), batch {info['batch_size']}, "
        f"crop {info['crop_size']}, {info['workers']} CPU workers, {info['epochs']} timed epochs, device {info['device']}"
    )
    print(f"{'backend':8} {'decode':26} {'pairs/s':>9} {'vs torch':>9}  per epoch")
    for r in rows:
        if r.get("skipped"):
            print(f"{r['backend']:8} skipped: {r['skipped']}")
            continue
        print(
            f"{r['backend']:8} {r['decode']:26} {r['pairs_per_s']:9.1f} {r['vs_torch']:9.2f}  {r['epoch_pairs_per_s']}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CI smoke size (a few seconds on a CPU)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    ap.add_argument("--data", type=Path, help="an iHarmony4-layout root to read instead of synthetic images")
    ap.add_argument("--pairs", type=int, help="number of pairs (default 320, tiny 24)")
    ap.add_argument("--workers", type=int, help="CPU workers for both backends (default min(8, cores))")
    args = ap.parse_args(argv)
    rows = run(args.tiny, data=args.data, pairs=args.pairs, workers=args.workers)
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
