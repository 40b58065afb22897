"""`python -m giftnet.pipeline.builders.prepare`: a resized copy of an iHarmony4-layout dataset (HAdobe5k's 6000 px photos).

HAdobe5k's images reach 6000 px on a side; the papers train and test on copies whose long side
is at most 1024 (iSSAM's LimitLongest1024). This command writes such a copy once, so the loaders
stop decoding 30-megapixel JPEGs every epoch:

    python -m giftnet.pipeline.builders.prepare --data /data/iHarmony4 --out /data/iHarmony4-1024 [--subsets HAdobe5k]

Each composite, mask and real image whose long side exceeds `--max-side` is resized with
OpenCV's INTER_LINEAR on uint8 (giftnet.pipeline.resize: what iSSAM's resize does) and saved as JPEG
(quality 95, 4:4:4) or PNG (masks); smaller files are copied byte for byte. The list files are
copied. The source is only read. Every file is written atomically (giftnet.fileio), so an
interrupted run leaves whole files only, and running the same command again resumes: files
already in the copy are kept. `OUT/prepare.json` records the arguments; a copy made with other
arguments is refused.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from giftnet.errors import UsageError, run_cli
from giftnet.fileio import atomic_write_bytes, atomic_write_text
from giftnet.pipeline.ihd import SPLITS, list_subsets, read_pairs, subset_list_file
from giftnet.pipeline.images import JPEG_QUALITY, open_image, read_mask, read_rgb
from giftnet.pipeline.resize import cv2_linear_resize_u8

PROG = "python -m giftnet.pipeline.builders.prepare"
RECORD = "prepare.json"
VERSION = 1


def fit_long_side(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) with the long side at most `max_side`, the other side rounded (never below 1)."""
    longest = max(height, width)
    if longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "PNG":
        Image.fromarray(array, "L" if array.ndim == 2 else "RGB").save(buffer, format="PNG")
    else:
        Image.fromarray(array, "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def prepare_file(src: Path, dst: Path, max_side: int, is_mask: bool) -> bool:
    """Write `dst`: `src` resized to fit `max_side`, or copied when it fits. True if it was resized."""
    _, header = open_image(src)
    width, height = header.width, header.height  # as every reader sees the file (EXIF rotation applied)
    target = fit_long_side(height, width, max_side)
    if target == (height, width):
        atomic_write_bytes(dst, src.read_bytes())
        return False
    if is_mask:  # channel 0, alpha-only and 16-bit masks as every reader sees them
        array = cv2_linear_resize_u8(np.rint(read_mask(src) * 255.0).astype(np.uint8), *target)
    else:
        array = cv2_linear_resize_u8(read_rgb(src), *target)
    fmt = "PNG" if dst.suffix.lower() == ".png" else "JPEG"
    atomic_write_bytes(dst, _encode(array, fmt))
    return True


def planned_files(data: Path, subsets: Iterable[str]) -> list[tuple[Path, bool]]:
    """(source file, is a mask) of every file the lists of `subsets` use, each once, in a fixed order."""
    files: dict[Path, bool] = {}
    for subset in subsets:
        splits = [split for split in SPLITS if subset_list_file(data / subset, split).is_file()]
        if not splits:
            raise UsageError(f"--subsets {subset}: {data / subset} has no train or test list")
        for pair in (pair for split in splits for pair in read_pairs(data, [subset], split)):
            files.setdefault(pair.composite, False)
            files.setdefault(pair.mask, True)
            files.setdefault(pair.real, False)
    return sorted(files.items())


class Progress:
    """One plain line every `every` seconds and at the end: works in a terminal and in a log file."""

    def __init__(self, total: int, every: float = 5.0, out: Callable[[str], None] | None = None) -> None:
        self.total, self.every, self.done, self.resized = total, every, 0, 0
        self.start = self.last = time.monotonic()
        self.out = out or (lambda line: print(line, file=sys.stderr, flush=True))

    def step(self, resized: bool, skipped: bool = False) -> None:
        self.done += 1
        self.resized += int(resized)
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            self.out(
                f"prepare: {self.done}/{self.total} files ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{self.resized} resized, {rate:.1f} files/s, ETA {eta:.0f} s"
            )


def _check_record(out: Path, record: dict) -> None:
    path = out / RECORD
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{path}: unreadable; remove it, or choose another --out") from None
    if old != record:
        raise UsageError(f"{out} was prepared with other arguments ({path}: {old}); choose another --out")


def prepare_dataset(data: Path, out: Path, *, subsets: list[str] | None = None, max_side: int = 1024) -> dict:
    """Write the resized copy of `subsets` (default: every subset with a list) of `data` into `out`.

    Resumable: files already in `out` are kept. Returns counts {"files", "resized", "copied", "kept"}.
    """
    data, out = Path(data), Path(out)
    if max_side < 8:
        raise UsageError(f"--max-side must be at least 8, got {max_side}")
    if not data.is_dir():
        raise UsageError(f"--data {data}: not a directory")
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} is inside --data {data}; the source is never written to")
    names = subsets or sorted(set(list_subsets(data, "train")) | set(list_subsets(data, "test")))
    if not names:
        raise UsageError(f"--data {data}: no subset with a train or test list")
    record = {"version": VERSION, "source": str(data.resolve()), "subsets": names, "max_side": max_side}
    _check_record(out, record)
    files = planned_files(data, names)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RECORD, json.dumps(record, indent=1) + "\n")
    counts = {"files": len(files), "resized": 0, "copied": 0, "kept": 0}
    progress = Progress(len(files))
    for src, is_mask in files:
        dst = out / src.relative_to(data)
        if dst.is_file():
            counts["kept"] += 1
            progress.step(False)
            continue
        resized = prepare_file(src, dst, max_side, is_mask)
        counts["resized" if resized else "copied"] += 1
        progress.step(resized)
    for subset in names:  # lists last: a copy with its lists is a finished copy
        for split in SPLITS:
            src = subset_list_file(data / subset, split)
            if src.is_file():
                atomic_write_bytes(out / src.relative_to(data), src.read_bytes())
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="dataset root in the iHarmony4 layout (only read)")
    p.add_argument("--out", type=Path, required=True, help="root of the resized copy (created; resumed if present)")
    p.add_argument("--subsets", nargs="+", default=None, help="subset folders (default: all with a list)")
    p.add_argument("--max-side", type=int, default=1024, help="longest side of the copy's images (default 1024)")
    return p


def _run(args: argparse.Namespace) -> int:
    counts = prepare_dataset(args.data, args.out, subsets=args.subsets, max_side=args.max_side)
    print(
        f"{args.out}: {counts['files']} files ({counts['resized']} resized, {counts['copied']} copied, "
        f"{counts['kept']} already there)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
