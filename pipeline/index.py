"""The dataset index: image sizes and a coarse foreground grid per mask, so crops need no mask decode.

One file per subset folder, `SUBSET/giftnet-index.npz` beside the list files, written atomically
(giftnet.fileio) as a plain npz (read with allow_pickle=False). Arrays:

    format, grid        int64 scalars (FORMAT, GRID)
    paths   (N,)        str: each file's path relative to the subset folder
    stat    (N, 2)      int64: size in bytes and mtime in ns when the entry was made
    hw      (N, 2)      int64: height and width from the file's header (a mask: its decoded shape)
    mask    (N,)        int64: row of the file in the mask arrays, -1 for photos
    native  (N,)        bool: a photo whose stored bytes DALI decodes to the very pixels of
                        images.read_rgb (images.Header.dali_native: not EXIF-rotated, not 16-bit,
                        a plain 8-bit JPEG/PNG); False for masks (DALI gets their runs' pixels)
    sums    (M, G, G)   uint32: sum of the uint8 mask values (0-255) in each of G x G cells
    median  (M, 2)      int64: (y, x) of the median non-zero mask pixel in raster order, -1 if none
    runs_file           str scalar: the masks' runs file beside it (giftnet.pipeline.runs_file)
    runs_at (M, 2)      int64: each mask's records [lo, hi) in that file

An entry whose file's size or mtime changed is rebuilt on the next use; the rest are reused. An
index of an older FORMAT is rebuilt whole (format 2 added `native`; format 3 the masks' runs, which
replaced a `plain` flag: the feeder no longer hands DALI any mask file). A runs file that is
missing, incomplete or not what the index names has its masks' entries rebuilt.

The keep-background rule asks whether a crop window holds more than about one output pixel of
foreground. Cell sums bound the window's sum exactly: a cell inside the window counts fully, a
cell it cuts counts between max(0, sum - 255 * outside) and min(sum, 255 * inside). When both
bounds fall on the same side of the threshold the answer is exact; otherwise (the foreground lies
only in cut cells near the window's edge) the mask is decoded for that pair. The median pixel is
the fallback's target. So sample_crop_indexed returns exactly what augment.sample_crop returns.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from giftnet.fileio import atomic_writer
from giftnet.pipeline import images, mask_runs
from giftnet.pipeline.augment import (
    CropParams,
    area_from_sum,
    check_same_size,
    draw_crop,
    foreground_area,
    median_foreground,
    read_mask,
)
from giftnet.pipeline.ihd import MASK_DIR
from giftnet.pipeline.mask_runs import MaskRuns
from giftnet.pipeline.pairs import DatasetError, Pair
from giftnet.pipeline.runs_file import RunsTable, remove_other_runs, runs_of, verify_runs, write_runs

INDEX_NAME = "giftnet-index.npz"
FORMAT = 3
GRID = 16


def cell_edges(n: int, grid: int = GRID) -> np.ndarray:
    """The grid's cell boundaries along a side of n pixels: floor(k n / grid), k = 0..grid."""
    return (np.arange(grid + 1, dtype=np.int64) * n) // grid


def grid_sums(mask: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(grid, grid) uint32 sums of a uint8 (H, W) mask's values over the cells of cell_edges."""
    ys, xs = cell_edges(mask.shape[0], grid), cell_edges(mask.shape[1], grid)
    # Summed-area table with a zero row and column, then four corners per cell.
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    corners = table[np.ix_(ys, xs)]
    return (corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]).astype(np.uint32)


@dataclasses.dataclass(frozen=True)
class MaskSummary:
    """What the index knows of one mask for drawing crops: shape, cell sums, median foreground pixel."""

    shape: tuple[int, int]
    sums: np.ndarray
    median: tuple[int, int] | None

    @classmethod
    def of(cls, mask: np.ndarray, grid: int = GRID) -> MaskSummary:
        return cls((int(mask.shape[0]), int(mask.shape[1])), grid_sums(mask, grid), median_foreground(mask))

    def view(self) -> GridView:
        """The arrays the bounds need, made for one crop draw (kept off the summary: memory)."""
        return GridView(self)

    def quick_bounds(self, top: int, left: int, h: int, w: int) -> tuple[int, int]:
        return self.view().quick_bounds(top, left, h, w)

    def bounds(self, top: int, left: int, h: int, w: int) -> tuple[int, int]:
        return self.view().bounds(top, left, h, w)


@functools.lru_cache(maxsize=4096)
def _geometry(height: int, width: int, grid: int) -> tuple:
    """Cell edges (arrays and lists) and cell areas of an image size; iHarmony4 repeats a few sizes."""
    ys, xs = cell_edges(height, grid), cell_edges(width, grid)
    return ys, xs, ys.tolist(), xs.tolist(), np.outer(np.diff(ys), np.diff(xs))


class GridView:
    """A mask summary's bounds on the sum of mask values in a window, loose and fast or exact."""

    def __init__(self, summary: MaskSummary) -> None:
        self.ys, self.xs, self.ys_list, self.xs_list, self.area = _geometry(*summary.shape, summary.sums.shape[0])
        self.raw = summary.sums  # uint32; their sums are taken in uint64 (no overflow)
        self._sums: np.ndarray | None = None

    @property
    def sums(self) -> np.ndarray:
        """The cell sums as int64, made when the exact bounds first need them."""
        if self._sums is None:
            self._sums = self.raw.astype(np.int64)
        return self._sums

    def quick_bounds(self, top: int, left: int, h: int, w: int) -> tuple[int, int]:
        """Loose bounds from two slices of the cells: those inside the window, those it touches."""
        ys, xs, sums = self.ys_list, self.xs_list, self.raw
        i0, i1 = bisect.bisect_left(ys, top), bisect.bisect_right(ys, top + h) - 1
        j0, j1 = bisect.bisect_left(xs, left), bisect.bisect_right(xs, left + w) - 1
        low = int(sums[i0:i1, j0:j1].sum()) if i1 > i0 and j1 > j0 else 0
        r0, r1 = bisect.bisect_right(ys, top) - 1, bisect.bisect_left(ys, top + h)
        c0, c1 = bisect.bisect_right(xs, left) - 1, bisect.bisect_left(xs, left + w)
        return low, int(sums[r0:r1, c0:c1].sum())

    def bounds(self, top: int, left: int, h: int, w: int) -> tuple[int, int]:
        """(lowest, highest) possible sum of mask values in the window, exact to the cell sums."""
        ys, xs = self.ys, self.xs
        oy = np.maximum(np.minimum(ys[1:], top + h) - np.maximum(ys[:-1], top), 0)
        ox = np.maximum(np.minimum(xs[1:], left + w) - np.maximum(xs[:-1], left), 0)
        inside = np.outer(oy, ox)
        high = np.minimum(self.sums, 255 * inside).sum()
        low = np.maximum(self.sums - 255 * (self.area - inside), 0).sum()
        return int(low), int(high)


class _Judge:
    """The keep-background test for one pair: from the grid bounds, decoding the mask only when torn."""

    def __init__(self, summary: MaskSummary, crop_size: int, load_mask: Callable[[], np.ndarray]) -> None:
        self.summary, self.crop_size, self.load_mask = summary, crop_size, load_mask
        self.mask: np.ndarray | None = None
        self.view: GridView | None = None

    def __call__(self, top: int, left: int, h: int, w: int) -> bool:
        if self.mask is None:
            view = self.view = self.view or self.summary.view()
            for bounds in (view.quick_bounds, view.bounds):
                low, high = bounds(top, left, h, w)
                if area_from_sum(low, h, w, self.crop_size) > 1.0:
                    return True
                if area_from_sum(high, h, w, self.crop_size) <= 1.0:
                    return False
            self.mask = self.load_mask()
            if self.mask.shape != self.summary.shape:
                raise DatasetError(f"mask is {self.mask.shape} but the dataset index says {self.summary.shape}")
        return foreground_area(self.mask, top, left, h, w, self.crop_size) > 1.0


def sample_crop_indexed(
    summary: MaskSummary,
    load_mask: Callable[[], np.ndarray],
    *,
    crop_size: int,
    seed: int,
    epoch: int,
    index: int,
) -> tuple[CropParams, bool]:
    """augment.sample_crop's result from the index; also whether the mask had to be decoded."""
    judge = _Judge(summary, crop_size, load_mask)
    crop = draw_crop(summary.shape, judge, lambda: summary.median, seed=seed, epoch=epoch, index=index)
    return crop, judge.mask is not None


@dataclasses.dataclass
class _Entry:
    stat: tuple[int, int]
    hw: tuple[int, int]
    mask: MaskSummary | None = None
    native: bool = False  # a photo DALI decodes as stored (images.Header.dali_native)
    runs: MaskRuns | None = None  # a mask's runs made this time (not yet in a runs file)
    runs_at: tuple[str, int, int] | None = None  # or where they are: (runs file, lo, hi)

    def get_runs(self) -> MaskRuns:
        if self.runs is not None:
            return self.runs
        assert self.runs_at is not None and self.mask is not None, "a mask entry has its runs"
        return runs_of(*self.runs_at, self.mask.shape)


def index_file_for(pair: Pair) -> Path | None:
    """Where a pair's index lives: its subset folder (the masks folder's parent); None off that layout."""
    return pair.mask.parent.parent / INDEX_NAME if pair.mask.parent.name == MASK_DIR else None


def _key(path: Path, folder: Path | None) -> str:
    if folder is not None and path.parent.parent == folder:
        return path.relative_to(folder).as_posix()
    return str(path.absolute())


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    return int(st.st_size), int(st.st_mtime_ns)


def _make_entry(path: Path, is_mask: bool, stat: tuple[int, int]) -> _Entry:
    if not is_mask:
        header = images.read_header(path)  # the one decoder's view: rotated size, budget, regular file
        return _Entry(stat, (header.height, header.width), native=header.dali_native)
    mask = read_mask(path)
    summary = MaskSummary.of(mask)
    return _Entry(stat, summary.shape, summary, runs=mask_runs.encode(mask))


def load_store(path: Path) -> dict[str, _Entry]:
    """The entries of an index file; empty when it is missing, of another format, or unreadable.
    Without a sound runs file the masks' entries are left out (so they are rebuilt)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != FORMAT or int(z["grid"]) != GRID:
                return {}
            paths, stat, hw, rows = z["paths"], z["stat"], z["hw"], z["mask"]
            sums, median, native = z["sums"], z["median"], z["native"]
            runs_file, runs_at = str(z["runs_file"]), z["runs_at"]
    except (OSError, ValueError, KeyError) as e:
        warnings.warn(f"{path}: unreadable dataset index, rebuilding it ({e})", stacklevel=2)
        return {}
    runs_path = str(path.parent / runs_file)
    masks_ok = _runs_sound(runs_path) if len(runs_at) else True
    store = {}
    for k, name in enumerate(paths.tolist()):
        shape = (int(hw[k, 0]), int(hw[k, 1]))
        entry = _Entry((int(stat[k, 0]), int(stat[k, 1])), shape, native=bool(native[k]))
        if rows[k] >= 0:
            if not masks_ok:
                continue
            r = int(rows[k])
            mid = None if median[r, 0] < 0 else (int(median[r, 0]), int(median[r, 1]))
            entry.mask = MaskSummary(shape, sums[r], mid)
            entry.runs_at = (runs_path, int(runs_at[r, 0]), int(runs_at[r, 1]))
        store[name] = entry
    return store


def _runs_sound(runs_path: str) -> bool:
    """Whether the runs file the index names is there, complete and holds what it was written with."""
    try:
        verify_runs(runs_path)  # its name is its content's hash: the very file written with this index
    except DatasetError as e:
        warnings.warn(f"{e}; rebuilding the masks' entries", stacklevel=3)
        return False
    return True


def save_store(path: Path, store: dict[str, _Entry]) -> None:
    """Write the entries as an index file and its runs file, each atomically; the index last, so it
    never names a runs file that is not complete. The entries then point into the new runs file."""
    names = sorted(store)
    mask_names = [n for n in names if store[n].mask is not None]
    runs_path, at = write_runs(path.parent, [store[n].get_runs() for n in mask_names])
    masks = [mask for n in mask_names if (mask := store[n].mask) is not None]
    rows, r = [], 0
    for n in names:
        rows.append(r if store[n].mask is not None else -1)
        r += store[n].mask is not None
    arrays = {
        "format": np.int64(FORMAT),
        "grid": np.int64(GRID),
        "paths": np.array(names, dtype=str) if names else np.zeros(0, "U1"),
        "stat": np.array([store[n].stat for n in names], np.int64).reshape(-1, 2),
        "hw": np.array([store[n].hw for n in names], np.int64).reshape(-1, 2),
        "mask": np.array(rows, np.int64),
        "native": np.array([store[n].native for n in names], bool),
        "sums": np.array([m.sums for m in masks], np.uint32).reshape(-1, GRID, GRID),
        "median": np.array([m.median or (-1, -1) for m in masks], np.int64).reshape(-1, 2),
        "runs_file": np.array(runs_path.name),
        "runs_at": at,
    }
    with atomic_writer(path) as f:
        np.savez_compressed(f, **arrays)
    remove_other_runs(runs_path)
    where = str(runs_path)
    for n, (lo, hi) in zip(mask_names, at.tolist(), strict=True):
        store[n].runs, store[n].runs_at = None, (where, lo, hi)


@dataclasses.dataclass
class PairIndex:
    """The index entries of a pair list, aligned with it; `rebuilt` counts entries made this time.
    `native[i]`: whether DALI decodes pair i's (composite, real) bytes as stored; `runs[i]`: pair
    i's mask as runs (memory-mapped from the runs file where the index is on disk)."""

    shapes: list[tuple[int, int]]
    masks: list[MaskSummary]
    files: list[Path]
    rebuilt: int
    native: list[tuple[bool, bool]]
    runs: RunsTable


def index_pairs(pairs: Sequence[Pair], *, workers: int | None = None, write: bool = True) -> PairIndex:
    """Load, refresh (changed or new files) and save the index of `pairs`; sizes checked per pair.

    Missing files and composite / mask / real size mismatches raise DatasetError naming the file.
    An index that cannot be written (a read-only dataset) is kept in memory with a warning.
    """
    groups: dict[Path | None, list[Path]] = {}
    for pair in pairs:
        groups.setdefault(index_file_for(pair), []).extend((pair.composite, pair.mask, pair.real))
    stores: dict[Path | None, dict[str, _Entry]] = {}
    todo: list[tuple[Path | None, str, Path, bool, tuple[int, int]]] = []
    masks = {pair.mask for pair in pairs}
    for where, files in groups.items():
        store = stores[where] = load_store(where) if where is not None else {}
        folder = where.parent if where is not None else None
        for path in dict.fromkeys(files):
            key, stat = _key(path, folder), _stat(path)
            entry = store.get(key)
            if entry is None or entry.stat != stat or (path in masks) != (entry.mask is not None):
                todo.append((where, key, path, path in masks, stat))
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while decoding
        made = list(pool.map(lambda t: _make_entry(t[2], t[3], t[4]), todo))
    for (where, key, *_), entry in zip(todo, made, strict=True):
        stores[where][key] = entry
    changed = {t[0] for t in todo if t[0] is not None}
    written: list[Path] = []
    for where in sorted(changed) if write else ():
        try:
            save_store(where, stores[where])
            written.append(where)
        except OSError as e:
            warnings.warn(f"{where}: cannot write the dataset index ({e}); using it from memory", stacklevel=2)
    return _align(pairs, stores, rebuilt=len(todo), written=written)


def _align(pairs: Sequence[Pair], stores: dict, *, rebuilt: int, written: list[Path]) -> PairIndex:
    shapes, summaries, native, runs = [], [], [], []
    for pair in pairs:
        where = index_file_for(pair)
        folder = where.parent if where is not None else None
        store = stores[where]
        comp, mask, real = (store[_key(p, folder)] for p in (pair.composite, pair.mask, pair.real))
        check_same_size((pair.composite, pair.mask, pair.real), (comp.hw, mask.hw, real.hw))
        shapes.append(mask.hw)
        summaries.append(mask.mask)
        native.append((comp.native, real.native))
        runs.append(mask.runs_at or mask.get_runs())  # in memory: off the IHD layout, or not written
    return PairIndex(shapes, summaries, written, rebuilt, native, RunsTable(shapes, runs))


def stale_entries(pairs: Sequence[Pair]) -> tuple[int, int]:
    """(files whose index entry is missing or out of date, files checked): stat calls, and the
    runs file's check (a mask whose runs are missing or damaged counts as out of date)."""
    stale, total = 0, 0
    stores: dict[Path | None, dict[str, _Entry]] = {}
    for pair in pairs:
        where = index_file_for(pair)
        if where not in stores:
            stores[where] = load_store(where) if where is not None else {}
        folder = where.parent if where is not None else None
        for path in (pair.composite, pair.mask, pair.real):
            entry = stores[where].get(_key(path, folder))
            total += 1
            stale += entry is None or entry.stat != _stat(path)
    return stale, total
