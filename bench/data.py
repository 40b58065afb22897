"""Data benchmark: the DALI feeder alone, the DALI pipeline and the PyTorch DataLoader, side by side.

For each image size and each core count (1, 2, ... all; the process and its children are pinned to
that many CPUs, and torch's intra-op threads set to as many: `pinned`) one run measures, in turn:

- feeder: giftnet.pipeline.dali_feed.TrainFeed alone (file reads, index-based crops and the mask windows
  cut from the runs: what DALI's worker processes run), in `cores` processes at once; pairs/s per process;
- feeder_pil: the feeder it replaced (every mask decoded with PIL, the crop drawn on it), likewise;
- torch: make_train_loader(backend="torch", num_workers=cores): DataLoader worker processes + PIL;
- dali: make_train_loader(backend="dali", num_workers=cores): DALI CPU threads (GPU decoding with
  CUDA), its feeder as the loader places it (dali_loader.default_feed_processes: in this process
  when the CPU decodes, in one worker process when the GPU does).

All three draw the same crops (giftnet.pipeline.augment) at the same batch and crop size. Each figure comes
with pairs/s and CPU seconds per pair (user + system of every process involved, live or reaped:
giftnet.bench.proc_cpu) in the steady state, the start-up (first batch) apart, and the 1-minute
load average at its end, so a user can work out cores per GPU on a quiet machine. The process
applies giftnet.allocator's malloc settings first, as train.py does (its workers inherit them).

    python -m giftnet.bench.data [--tiny] [--photos DIR --sides 0 640 1024] [--backends ...] [--json OUT]
                                 [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from giftnet.allocator import configure_allocator
from giftnet.bench.common import machine
from giftnet.bench.data_sets import from_photos, make_triplets
from giftnet.bench.proc_cpu import tree_cpu_seconds
from giftnet.fileio import atomic_write_text
from giftnet.pipeline import dali_loader
from giftnet.pipeline.augment import ShardPlan, read_mask, sample_crop
from giftnet.pipeline.dali_feed import TrainFeed, read_bytes
from giftnet.pipeline.index import index_pairs
from giftnet.pipeline.loaders import make_train_loader
from giftnet.pipeline.pairs import Pair

FULL = {"pairs": 320, "batch_size": 16, "crop_size": 256, "feed_epochs": 10}
TINY = {"pairs": 24, "batch_size": 4, "crop_size": 32, "feed_epochs": 2}
BACKENDS = ("feeder", "feeder_pil", "torch", "dali")


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def core_counts() -> list[int]:
    """1, 2 and all of the CPUs this process may use (without repeats)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return sorted({c for c in (1, 2, n) if c <= n})


@contextlib.contextmanager
def pinned(cores: int) -> Iterator[None]:
    """Run on the first `cores` allowed CPUs (children inherit it), then restore the affinity.

    torch's intra-op threads are set to `cores` too, what a process started on that many CPUs gets
    (train.py leaves torch's default): pinned with the machine's count, their OpenMP spinning
    would take the few cores left from the loaders' own threads.
    """
    threads = torch.get_num_threads()
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else None
    if allowed is not None:
        os.sched_setaffinity(0, allowed[:cores])
    torch.set_num_threads(cores)
    try:
        yield
    finally:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)
        torch.set_num_threads(threads)


_FEED: dict = {}  # what forked feeder processes read: pairs, index, plan, crop size


def _feed_worker(epochs: int, with_index: bool = True) -> tuple[int, float, float, int]:
    """In a forked process: run the feeder over `epochs` epochs; (pairs, seconds, CPU s, masks decoded).

    with_index=False times the feeder this one replaced: bytes read, every mask decoded with PIL,
    the crop drawn on the decoded mask and its window cut out.
    """
    pairs, index, plan, crop = _FEED["pairs"], _FEED["index"], _FEED["plan"], _FEED["crop"]
    count = decoded = 0
    start, cpu = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        batches = plan.batches(epoch)
        if not with_index:
            for i in (int(i) for b in batches for i in b):
                read_bytes(pairs[i].composite), read_bytes(pairs[i].real)
                mask = read_mask(pairs[i].mask)
                p = sample_crop(mask, crop_size=crop, seed=plan.seed, epoch=epoch, index=i)
                np.ascontiguousarray(mask[p.top : p.top + p.height, p.left : p.left + p.width])
                count, decoded = count + 1, decoded + 1
            continue
        feed = TrainFeed(pairs, index.masks, runs=index.runs, native=index.native, crop_size=crop,
                         seed=plan.seed, epoch=epoch, batches=batches)  # fmt: skip
        for k in range(len(batches)):
            count += len(feed(k)[0])
        decoded += feed.decoded
    return count, time.perf_counter() - start, time.process_time() - cpu, decoded


def time_feeder(pairs: list[Pair], cfg: dict, cores: int, with_index: bool = True) -> dict:
    """The feeder alone in `cores` processes at once: per-process pairs/s, CPU s per pair."""
    _FEED.update(
        pairs=pairs,
        index=index_pairs(pairs),
        plan=ShardPlan(len(pairs), cfg["batch_size"], 0, 0, 1, True),
        crop=cfg["crop_size"],
    )
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork")) as pool:
        epochs = cfg["feed_epochs"] if with_index else max(1, cfg["feed_epochs"] // 5)
        runs = list(pool.map(_feed_worker, [epochs] * cores, [with_index] * cores))
    n = sum(r[0] for r in runs)
    per_process = sum(r[0] / r[1] for r in runs) / cores
    return {
        "pairs_per_s": round(per_process * cores, 1),
        "pairs_per_s_per_process": round(per_process, 1),
        "cpu_s_per_pair": round(sum(r[2] for r in runs) / n, 6),
        "masks_decoded": round(sum(r[3] for r in runs) / n, 4),
        "decode": "none (file reads, index crops, runs windows)" if with_index else "PIL mask decode (the old feeder)",
    }


def time_loader(pairs: list[Pair], cfg: dict, cores: int, backend: str, device: torch.device) -> dict:
    """One timed epoch of a training loader after a short warm-up epoch.

    The rate and CPU per pair are the steady state, from the epoch's first batch to its end: a
    real epoch has thousands of batches, so the start-up (DataLoader workers forked, DALI's
    pipeline built, the first batch decoded; given apart as start_s, start_cpu_s) counts for
    little in it, but for much in an epoch of 20. CPU is that of every process involved (this one,
    DALI's threads and feeder process, DataLoader workers), live or reaped (bench.proc_cpu).
    """
    kw = {k: cfg[k] for k in ("batch_size", "crop_size")}
    loader = make_train_loader(pairs, num_workers=cores, device=device, backend=backend, **kw)
    for i, _ in enumerate(loader.epoch(0)):  # warm-up: caches, DALI's first allocations
        if i >= 2:
            break
    cpu0, start = tree_cpu_seconds(), time.perf_counter()
    batches = loader.epoch(1)
    first = next(batches)["index"].numel()
    cpu1, steady_start = tree_cpu_seconds(), time.perf_counter()
    count = 0
    for batch in batches:  # the generator's end stops DALI's pipeline and the DataLoader's workers
        count += batch["index"].numel()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    end = time.perf_counter()
    decode = "PIL in worker processes" if backend == "torch" else ""
    if backend == "dali":
        processes = getattr(loader, "feed_processes", 0)
        feeder = f"feeder in {processes} process" if processes else "feeder inline"
        where = "GPU (mixed)" if device.type == "cuda" else "CPU window decode, resize in torch"
        decode = f"DALI {where}, {feeder}"
    del loader
    cpu2 = tree_cpu_seconds()
    total = first + count
    steady = count > 0  # an epoch of one batch has no steady state: the whole epoch then
    return {
        "pairs_per_s": round(count / (end - steady_start) if steady else total / (end - start), 1),
        "cpu_s_per_pair": round((cpu2 - cpu1) / count if steady else (cpu2 - cpu0) / total, 5),
        "start_s": round(steady_start - start, 3),
        "start_cpu_s": round(cpu1 - cpu0, 3),
        "epoch_pairs_per_s": round(total / (end - start), 1),
        "epoch_cpu_s_per_pair": round((cpu2 - cpu0) / total, 5),
        "decode": decode,
    }


def compare(
    pairs: list[Pair],
    cfg: dict,
    *,
    images: str,
    cores_list: list[int],
    device: torch.device,
    backends: tuple[str, ...] = BACKENDS,
) -> list[dict]:
    """Rows for every (core count, backend) on these pairs, torch and dali alternating in order."""
    rows = []
    for cores in cores_list:
        order = ["feeder", "feeder_pil", *(["torch", "dali"] if cores % 2 else ["dali", "torch"])]
        got: dict[str, dict[str, Any]] = {}
        with pinned(cores):
            for name in (n for n in order if n in backends):
                base = {
                    "backend": name,
                    "cores_used": cores,
                    "images": images,
                    "pairs": len(pairs),
                    "device": str(device),
                }
                base |= {"batch_size": cfg["batch_size"], "crop_size": cfg["crop_size"]}
                if name == "dali" and dali_loader.DALI_IMPORT_ERROR is not None:
                    skip = f"DALI not importable: {dali_loader.DALI_IMPORT_ERROR}"
                    got[name] = base | {"skipped": skip, "pairs_per_s": None}
                    continue
                if name.startswith("feeder"):
                    fig = time_feeder(pairs, cfg, cores, with_index=name == "feeder")
                else:
                    fig = time_loader(pairs, cfg, cores, name, device)
                got[name] = base | fig | {"load_avg_1min": _load()}
        ref = got.get("torch", {})
        for name in (n for n in BACKENDS if n in got):
            row = got[name]
            for key, rate in (("vs_torch", "pairs_per_s"), ("epoch_vs_torch", "epoch_pairs_per_s")):
                mine, theirs = row.get(rate), ref.get(rate)
                row[key] = round(mine / theirs, 2) if mine and theirs and not name.startswith("feeder") else None
            rows.append(row)
    return rows


def run(
    tiny: bool,
    *,
    photos: Path | None = None,
    sides: tuple[int, ...] = (640, 1024),
    pairs: int | None = None,
    cores: list[int] | None = None,
    backends: tuple[str, ...] = BACKENDS,
) -> list[dict]:
    """Benchmark rows, each with the machine description; tiny = CI smoke size (synthetic, 1 core)."""
    cfg = dict(TINY if tiny else FULL)
    if pairs is not None:
        cfg["pairs"] = pairs
    cores_list = cores or ([1] if tiny else core_counts())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        sets = []
        if photos is None:
            lo, hi = (64, 96) if tiny else (256, 512)
            sets.append((make_triplets(Path(tmp), cfg["pairs"], min_side=lo, max_side=hi), f"synthetic {lo}-{hi} px"))
        else:
            for side in sides:  # 0: the photos at their own size
                made = from_photos(photos, Path(tmp) / str(side), cfg["pairs"], long_side=side or None)
                sets.append((made, f"real photos, {side} px long side" if side else "real photos, own size"))
        for made, images in sets:
            start = time.perf_counter()
            index_pairs(made)
            built = round((time.perf_counter() - start) / len(made) * 1000, 3)
            for row in compare(made, cfg, images=images, cores_list=cores_list, device=device, backends=backends):
                rows.append(row | {"index_build_ms_per_pair": built})
    info = machine()
    if photos is not None:
        info["source"] = (
            f"{photos}: photos and masks at their own size, resized to the long side shown (images bicubic, "
            "masks nearest); composites recoloured inside the mask; JPEG q90, masks 8-bit PNG"
        )
    return [row | info | {"load_avg_1min": row.get("load_avg_1min", info["load_avg_1min"])} for row in rows]


def _fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> list[str]:
    """The figures as a markdown table."""
    out = [
        "| images | cores | backend | decode | pairs/s | per process | CPU s/pair | vs torch | first batch s "
        "| epoch pairs/s | epoch vs torch | load |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("skipped"):
            out.append(f"| {r['images']} | {r['cores_used']} | {r['backend']} | skipped: {r['skipped']} |" + " |" * 8)
            continue
        out.append(
            f"| {r['images']} | {r['cores_used']} | {r['backend']} | {r['decode']} | {_fmt(r['pairs_per_s'], '.1f')} | "
            f"{_fmt(r.get('pairs_per_s_per_process'), '.1f')} | {_fmt(r['cpu_s_per_pair'], '.5f')} | "
            f"{_fmt(r['vs_torch'], '.2f')} | {_fmt(r.get('start_s'), '.2f')} | "
            f"{_fmt(r.get('epoch_pairs_per_s'), '.1f')} | {_fmt(r.get('epoch_vs_torch'), '.2f')} | "
            f"{_fmt(r['load_avg_1min'], '.2f')} |"
        )
    return out


def markdown(rows: list[dict]) -> str:
    """A results note: machine, git revision, date, settings, then the table."""
    info = rows[0]
    decoded = [r["masks_decoded"] for r in rows if r["backend"] == "feeder"]
    shares = ", ".join(f"{d:.2%}" for d in decoded)
    return "\n".join(
        [
            "# Data pipeline benchmark (`python -m giftnet.bench.data`)",
            "",
            f"Machine: {info['cpu']} ({info['cores']} cores), GPU {info['gpu']}; torch {info['torch']}, "
            f"DALI {info['dali']}, Pillow {info['pillow']}. Git `{info['git']}`, {info['date']}.",
            f"{info['pairs']} pairs per image size, batch {info['batch_size']}, crop {info['crop_size']}, "
            f"device {info['device']}; malloc {info.get('malloc', 'glibc as it is')}; torch's intra-op threads as "
            "many as the cores (as a process started on them). Loaders: one timed epoch "
            "after a 3-batch warm-up; pairs/s and CPU s/pair are its steady state (first batch to last; CPU of "
            "every process: this one, DataLoader workers, DALI's threads and feeder process), `first batch s` "
            "its start-up, `epoch` the whole epoch with the start-up. Feeders: CPU s/pair inside their "
            "processes. Load: the 1-minute load average at the end of each figure.",
            *([f"Images: {info['source']}."] if info.get("source") else []),
            *([f"Masks decoded by the feeder (the grid could not decide): {shares} of pairs."] if decoded else []),
            "",
            *table(rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m giftnet.bench.data", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CI smoke size (a few seconds on a CPU)")
    ap.add_argument("--photos", type=Path, help="a folder with images/*.jpg and masks/*.png to resize and use")
    ap.add_argument(
        "--sides", type=int, nargs="+", default=[640, 1024], help="long sides for --photos (0: the photos' own size)"
    )
    ap.add_argument("--pairs", type=int, help="pairs per image size (default 320, tiny 24)")
    ap.add_argument("--cores", type=int, nargs="+", help="core counts (default 1, 2 and all)")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="what to time")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    ap.add_argument("--markdown", type=Path, help="also write a results note (markdown) to this file")
    args = ap.parse_args(argv)
    malloc = "giftnet.allocator's settings (as train.py)" if configure_allocator() else "glibc as it is"
    rows = run(args.tiny, photos=args.photos, sides=tuple(args.sides), pairs=args.pairs, cores=args.cores,
               backends=tuple(args.backends))  # fmt: skip
    rows = [row | {"malloc": malloc} for row in rows]
    text = markdown(rows)
    print(text)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
