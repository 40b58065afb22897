"""The feeder's file reads: a batch's files into one reused buffer.

Fresh arrays per file cost the feeder about half its CPU on 1024 px photos: glibc serves blocks
over its mmap threshold (128 KiB at start) with fresh pages and hands them back to the kernel on
free, so every read page-faults its buffer in again (giftnet.allocator's settings avoid it, but
only in processes that apply them). A batch's files are therefore read into one buffer, which is
handed out as views and reused once no view of it is alive.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from giftnet.pipeline.pairs import DatasetError


class Arenas:
    """Byte buffers for a batch's files, each reused once nothing refers to it any more.

    DALI copies what the feeder returns (into shared memory from a worker process, into its own
    buffers in feed_input), but a worker's dispatcher thread may still be copying one batch while
    the next is read, and a caller may keep a batch. So a buffer is reused only when its reference
    count is down to this pool's own (a view of it holds a reference to it): never while in use.
    """

    KEEP = 4  # buffers kept for reuse: DALI's prefetch queue and the batch being read

    def __init__(self) -> None:
        self._pool: list[np.ndarray] = []
        self._lock = threading.Lock()  # two feeds of one process may read at once (DALI's threads)

    def _free(self) -> list[int]:
        # 2: the pool's reference and getrefcount's argument; every view or caller adds one.
        return [k for k in range(len(self._pool)) if sys.getrefcount(self._pool[k]) == 2]

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least `nbytes` bytes that no live array shares (the caller holds it
        from here on, so no other caller gets it)."""
        with self._lock:
            return self._take(nbytes)

    def _take(self, nbytes: int) -> np.ndarray:
        free = self._free()
        fits = [k for k in free if self._pool[k].size >= nbytes]
        if fits:
            return self._pool[fits[0]]
        buf = np.empty(max(nbytes + nbytes // 4, 1 << 16), dtype=np.uint8)  # room for the next batch
        if free:  # a free buffer too small for this batch: replace the smallest
            self._pool[min(free, key=lambda k: self._pool[k].size)] = buf
        elif len(self._pool) < self.KEEP:
            self._pool.append(buf)
        return buf

    def __len__(self) -> int:
        return len(self._pool)


ARENAS = Arenas()  # one pool per process: DALI builds a feed per epoch, its buffers outlive it


def read_files(paths: Sequence[str], arenas: Arenas = ARENAS) -> list[np.ndarray]:
    """Each file's bytes as a uint8 view of one buffer from `arenas`; DatasetError naming an unreadable
    or empty file. One open, fstat and read per file, no copy and no fresh allocation."""
    fds: list[int] = []
    path = ""
    try:
        sizes = []
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY))
            sizes.append(os.fstat(fds[-1]).st_size)
        buf = arenas.take(sum(sizes))
        out, offset = [], 0
        for path, fd, size in zip(paths, fds, sizes, strict=True):
            view = buf[offset : offset + size]
            # numpy's stubs declare ndarray's buffer protocol (__buffer__) only for Python 3.12 on
            n = os.readv(fd, [view]) if size else 0  # type: ignore[list-item]
            if n == 0:
                raise DatasetError(f"{path}: file is empty")
            out.append(view[:n])
            offset += size
        return out
    except OSError as e:
        raise DatasetError(f"{path}: cannot read file ({e})") from None
    finally:
        for fd in fds:
            os.close(fd)


def read_bytes(path: str | Path) -> np.ndarray:
    """A file's bytes as a uint8 array; DatasetError naming the file if it is unreadable or empty.

    One read into a fresh array (np.fromfile costs twice as much); read_files reads a batch.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = np.empty(os.fstat(fd).st_size, dtype=np.uint8)
            # numpy's stubs declare ndarray's buffer protocol (__buffer__) only for Python 3.12 on
            n = os.readv(fd, [data]) if data.size else 0  # type: ignore[list-item]
        finally:
            os.close(fd)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read file ({e})") from None
    if n == 0:
        raise DatasetError(f"{path}: file is empty")
    return data[:n]
