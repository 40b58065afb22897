"""The masks' runs beside the dataset index: one memory-mapped file per subset folder.

The index (giftnet.pipeline.index) decodes every mask once for its grid; it also keeps the mask
as runs (giftnet.pipeline.mask_runs) here, so the DALI feeder cuts each crop's mask window out of
them (about 0.1-0.2 ms at 1024 px) instead of DALI decoding the PNG (about 2.5-3 ms, on the host
even with a GPU). At about 4x the PNG's bytes (6 KB a mask at 640 px) they are too big for the
small index file, and they are read in DALI's worker processes, so they live in a file of their own
that every process maps (the page cache holds one copy per node), never pickled.

Layout, little-endian: MAGIC (8 bytes), the record count n (uint64), then n int32 starts, then n
uint8 values. Each mask is the records [lo, hi) of the index's `runs_at`: its runs, then one
sentinel whose start is h*w (its value is padding). The name holds a hash of the content,
`giftnet-mask-runs-<hash>.bin`, so the index names exactly the file it was written with, and ranks
that rebuild the same dataset at once write the same file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from giftnet.fileio import atomic_writer
from giftnet.pipeline.mask_runs import MaskRuns
from giftnet.pipeline.pairs import DatasetError

MAGIC = b"GIFTRUNS"
HEADER = 16  # MAGIC and the record count
PREFIX = "giftnet-mask-runs-"


def write_runs(folder: Path, masks: Sequence[MaskRuns]) -> tuple[Path, np.ndarray]:
    """Write `masks` as one runs file in `folder` (atomically); its path and each mask's (lo, hi)."""
    counts = np.array([m.runs + 1 for m in masks], np.int64)
    at = np.zeros((len(masks), 2), np.int64)
    at[:, 1] = np.cumsum(counts)
    at[1:, 0] = at[:-1, 1]
    n = int(at[-1, 1]) if len(masks) else 0
    starts = np.empty(n, "<i4")
    values = np.zeros(n, np.uint8)
    for m, (lo, hi) in zip(masks, at.tolist(), strict=True):
        starts[lo:hi] = m.starts  # the sentinel h*w < images.MAX_PIXELS: fits int32
        values[lo : hi - 1] = m.values
    header = MAGIC + np.uint64(n).astype("<u8").tobytes()
    digest = _hasher()
    for part in (header, starts.data, values.data):
        digest.update(part)
    path = folder / f"{PREFIX}{digest.hexdigest()}.bin"
    with atomic_writer(path) as f:
        f.write(header)
        f.write(starts.data)
        f.write(values.data)
    return path, at


def _hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=8)


def remove_other_runs(keep: Path) -> None:
    """Remove the runs files beside `keep` (the ones older indexes named). A process still mapping
    one keeps reading it: the data stays until it unmaps."""
    for old in keep.parent.glob(f"{PREFIX}*.bin"):
        if old != keep:
            old.unlink(missing_ok=True)


def verify_runs(path: str) -> None:
    """Check that runs file `path` holds what it was written with (its name is its content's hash);
    DatasetError naming it if not. Reads the whole file (about 1 s per GB)."""
    digest = _hasher()
    try:
        with open(path, "rb") as f:  # hashlib.file_digest is Python 3.11+
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the masks' runs file ({e})") from None
    if Path(path).name != f"{PREFIX}{digest.hexdigest()}.bin":
        raise DatasetError(f"{path}: the masks' runs file is damaged (its content does not match its name)")


def open_runs(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A runs file's (starts, values), memory-mapped read-only; DatasetError naming a bad file.

    The mapping is kept per (file, inode, mtime): a file replaced under the same name is mapped again.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the masks' runs file ({e})") from None
    return _mapped(path, st.st_ino, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _mapped(path: str, inode: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    del inode, mtime_ns  # the cache key only
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r") if os.path.getsize(path) else np.zeros(0, np.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the masks' runs file ({e})") from None
    n = int(data[8:HEADER].view("<u8")[0]) if data.size >= HEADER else -1
    if data.size < HEADER or bytes(data[:8]) != MAGIC or data.size != HEADER + 5 * n:
        raise DatasetError(f"{path}: not a complete masks' runs file")
    return data[HEADER : HEADER + 4 * n].view("<i4"), data[HEADER + 4 * n :]


def runs_of(path: str, lo: int, hi: int, shape: tuple[int, int]) -> MaskRuns:
    """The mask stored as records [lo, hi) of runs file `path`, as views of its mapping."""
    starts, values = open_runs(path)
    return MaskRuns(shape, starts[lo:hi], values[lo : hi - 1])


@dataclasses.dataclass
class RunsTable:
    """Every pair's mask runs: a file's (path, lo, hi) where the index is on disk, else arrays.

    Cheap to pickle into DALI's worker processes: the files are named, not copied, and mapped
    again where the table is used. Masks kept in memory (a dataset off the IHD layout, or one
    whose folder cannot be written) travel with it.
    """

    shapes: list[tuple[int, int]]
    where: list[tuple[str, int, int] | MaskRuns]

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, k: int) -> MaskRuns:
        at = self.where[k]
        return at if isinstance(at, MaskRuns) else runs_of(*at, self.shapes[k])
