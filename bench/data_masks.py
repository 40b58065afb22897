"""Mask benchmark: a training crop's mask pixels three ways, side by side on the same crops.

- dali: DALI's CPU decoder cutting the window out of the PNG (fn.decoders.image_slice, 8-bit
  grayscale, one thread), which is what the training graph ran before the runs, on the CPU and with
  a GPU alike (DALI decodes PNG on the host either way);
- pil: the whole PNG decoded by giftnet.pipeline.augment.read_mask and the window cut (the DataLoader);
- runs: giftnet.pipeline.mask_runs.window on the mask's runs (encoded once, like the dataset index),
  which is what the feeder now hands DALI.

The crops are the feeder's own (giftnet.pipeline.dali_feed.TrainFeed for epoch 0), and every runs
window is checked equal to PIL's before any figure is printed. Figures are CPU ms per mask: DALI's
from the process's CPU time (its one decoding thread), the others from this thread's own.

    python -m giftnet.bench.data_masks [--tiny] [--photos DIR --sides 0 640 1024] [--pairs N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from giftnet.allocator import configure_allocator
from giftnet.bench.common import machine
from giftnet.bench.data_sets import from_photos, make_triplets
from giftnet.pipeline import dali_loader, mask_runs
from giftnet.pipeline.augment import ShardPlan, read_mask
from giftnet.pipeline.dali_feed import TrainFeed, read_bytes
from giftnet.pipeline.index import index_pairs
from giftnet.pipeline.pairs import Pair


def crops(pairs: list[Pair], batch_size: int, crop_size: int) -> list[tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
    """Per batch of epoch 0: the mask bytes, windows (x, y, w, h) and pair indices the feeder gives DALI."""
    index = index_pairs(pairs)
    batches = ShardPlan(len(pairs), batch_size, 0, 0, 1, True).batches(0, 0)
    feed = TrainFeed(pairs, index.masks, runs=index.runs, native=index.native, crop_size=crop_size, seed=0, epoch=0,
                     batches=batches)  # fmt: skip
    out = []
    for k in range(len(batches)):
        _, _, _, anchor, shape, _, idx = feed(k)
        masks = [read_bytes(pairs[i].mask) for i in idx.tolist()]  # what DALI decoded before the runs
        out.append((masks, np.concatenate([anchor, shape], axis=1), idx))
    return out


def time_dali(batches: list, batch_size: int) -> float:
    """CPU ms per mask of DALI's window decode (after one warm-up batch), or nan without DALI."""
    if dali_loader.DALI_IMPORT_ERROR is not None:
        return float("nan")
    from nvidia.dali import fn, types

    source = iter([(m, w[:, :2].copy(), w[:, 2:].copy()) for m, w, _ in batches])
    pipe = dali_loader.build_pipeline(batch_size, 1, torch.device("cpu"))
    with pipe:
        data, anchor, shape = fn.external_source(source=source, num_outputs=3, batch=True)
        pipe.set_outputs(
            dali_loader.decoder(torch.device("cpu"), sliced=True)(data, anchor, shape, output_type=types.GRAY)
        )
    pipe.build()
    pipe.run()
    start = time.process_time()
    for _ in range(len(batches) - 1):
        pipe.run()
    seconds = time.process_time() - start
    getattr(pipe, "_shutdown", lambda: None)()
    return 1000 * seconds / ((len(batches) - 1) * batch_size)


def compare(pairs: list[Pair], batch_size: int, crop_size: int) -> dict:
    """The three ways on the same crops; runs windows checked equal to PIL's.

    Each result is dropped before the next is made, as in the loaders (whose buffers are reused):
    keeping them all would time this VM's first-touch page faults, not the decoders.
    """
    batches = crops(pairs, batch_size, crop_size)
    items = [(int(i), tuple(int(v) for v in w)) for _, ws, idx in batches for w, i in zip(ws, idx, strict=True)]
    clock = {"pil": 0.0, "encode": 0.0, "runs": 0.0}
    sizes, runs_bytes, runs_count = [], [], []
    for i, (x, y, w, h) in items:
        start = time.thread_time()
        full = read_mask(pairs[i].mask)
        cut = full[y : y + h, x : x + w].copy()
        clock["pil"] += time.thread_time() - start
        start = time.thread_time()
        runs = mask_runs.encode(full)
        clock["encode"] += time.thread_time() - start
        start = time.thread_time()
        got = mask_runs.window(runs, y, x, h, w)
        clock["runs"] += time.thread_time() - start
        if not np.array_equal(got, cut):
            raise AssertionError(f"runs window of {pairs[i].mask} differs from the decoded mask")
        sizes.append(full.shape)
        runs_bytes.append(runs.nbytes)
        runs_count.append(runs.runs)
        del full, cut, got
    png = [len(m) for ms, _, _ in batches for m in ms]
    return {
        "masks": len(items),
        "height_width": [int(v) for v in np.median(sizes, axis=0)],
        "dali_ms": round(time_dali(batches, batch_size), 3),
        **{f"{k}_ms": round(1000 * v / len(items), 3) for k, v in clock.items()},
        "png_bytes": int(np.mean(png)),
        "runs_bytes": int(np.mean(runs_bytes)),
        "runs_per_mask": int(np.mean(runs_count)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m giftnet.bench.data_masks", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CI smoke size")
    ap.add_argument("--photos", type=Path, help="a folder with images/*.jpg and masks/*.png to resize and use")
    ap.add_argument("--sides", type=int, nargs="+", default=[640, 1024], help="long sides for --photos (0: own size)")
    ap.add_argument("--pairs", type=int, default=160, help="pairs per size")
    args = ap.parse_args(argv)
    configure_allocator()  # train.py's malloc settings: freed buffers are reused, as in training
    torch.set_num_threads(1)
    info = machine()
    print(f"# Mask windows: {info['cpu']}, git {info['git']}, {info['date']}; one thread, CPU ms per mask")
    print("| images | masks | median h x w | DALI PNG window | PIL whole + cut | runs window | encode once "
          "| PNG bytes | runs bytes | runs |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="giftnet-masks-") as tmp:
        if args.tiny or args.photos is None:
            sets = {"synthetic": make_triplets(Path(tmp), 8 if args.tiny else args.pairs, min_side=40, max_side=96)}
        else:
            sets = {
                (f"{side} px long side" if side else "own size"): from_photos(
                    args.photos, Path(tmp) / str(side), args.pairs, long_side=side or None
                )
                for side in args.sides
            }
        for name, pairs in sets.items():
            r = compare(pairs, 4 if args.tiny else 16, 32 if args.tiny else 256)
            h, w = r["height_width"]
            print(f"| {name} | {r['masks']} | {h} x {w} | {r['dali_ms']} | {r['pil_ms']} | {r['runs_ms']} "
                  f"| {r['encode_ms']} | {r['png_bytes']} | {r['runs_bytes']} | {r['runs_per_mask']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
