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

The grid and the crops drawn from it: giftnet.pipeline.index_grid. Processes refreshing one index
take turns through an advisory lock beside it, `SUBSET/giftnet-index.lock` (giftnet.pipeline.index_lock).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from giftnet.fileio import atomic_writer
from giftnet.pipeline import images, mask_runs
from giftnet.pipeline.augment import check_same_size, read_mask
from giftnet.pipeline.ihd import MASK_DIR
from giftnet.pipeline.index_grid import GRID, MaskSummary
from giftnet.pipeline.index_lock import index_lock
from giftnet.pipeline.mask_runs import MaskRuns
from giftnet.pipeline.pairs import DatasetError, Pair
from giftnet.pipeline.runs_file import RunsTable, remove_other_runs, runs_of, verify_runs, write_runs

INDEX_NAME = "giftnet-index.npz"
FORMAT = 3


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


def load_store(path: Path, *, warn: bool = True) -> dict[str, _Entry]:
    """The entries of an index file; empty when it is missing, of another format, or unreadable.
    Without a sound runs file the masks' entries are left out (so they are rebuilt). `warn`: say so."""
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
        if warn:
            warnings.warn(f"{path}: unreadable dataset index, rebuilding it ({e})", stacklevel=3)
        return {}
    runs_path = str(path.parent / runs_file)
    masks_ok = _runs_sound(runs_path, warn) if len(runs_at) else True
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


def _runs_sound(runs_path: str, warn: bool) -> bool:
    """Whether the runs file the index names is there, complete and holds what it was written with."""
    try:
        verify_runs(runs_path)  # its name is its content's hash: the very file written with this index
    except DatasetError as e:
        if warn:
            warnings.warn(f"{e}; rebuilding the masks' entries", stacklevel=4)
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
    Processes refreshing one index take turns (giftnet.pipeline.index_lock): the first builds the
    entries, the others then find them built.
    """
    groups: dict[Path | None, list[Path]] = {}
    for pair in pairs:
        groups.setdefault(index_file_for(pair), []).extend((pair.composite, pair.mask, pair.real))
    masks = {pair.mask for pair in pairs}
    workers = workers or min(8, os.cpu_count() or 1)
    stores: dict[Path | None, dict[str, _Entry]] = {}
    rebuilt, written = 0, []
    for where, files in groups.items():
        if where is None:  # off the IHD layout: in memory only
            stores[None] = {}
            rebuilt += _build(stores[None], _todo({}, None, files, masks), workers)
            continue
        with index_lock(where, exclusive=False):  # readers share it; a refresh below is exclusive
            store = load_store(where, warn=False)
            todo = _todo(store, where.parent, files, masks)
        if todo:
            with index_lock(where, exclusive=write):
                store = load_store(where)  # again: another process may have built the entries meanwhile
                todo = _todo(store, where.parent, files, masks)
                rebuilt += _build(store, todo, workers)
                if todo and write and _save(where, store):
                    written.append(where)
        stores[where] = store
    return _align(pairs, stores, rebuilt=rebuilt, written=written)


def _todo(store: dict[str, _Entry], folder: Path | None, files: list[Path], masks: set[Path]) -> list:
    """(key, path, is_mask, stat) of each of `files` whose entry in `store` is missing or out of date."""
    todo = []
    for path in dict.fromkeys(files):
        key, stat = _key(path, folder), _stat(path)
        entry = store.get(key)
        if entry is None or entry.stat != stat or (path in masks) != (entry.mask is not None):
            todo.append((key, path, path in masks, stat))
    return todo


def _build(store: dict[str, _Entry], todo: list, workers: int) -> int:
    """Make the entries of `todo` into `store`; how many."""
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while decoding
        made = list(pool.map(lambda t: _make_entry(t[1], t[2], t[3]), todo))
    for (key, *_), entry in zip(todo, made, strict=True):
        store[key] = entry
    return len(todo)


def _save(where: Path, store: dict[str, _Entry]) -> bool:
    try:
        save_store(where, store)
    except OSError as e:
        warnings.warn(f"{where}: cannot write the dataset index ({e}); using it from memory", stacklevel=3)
        return False
    return True


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
            if where is None:
                stores[where] = {}
            else:
                with index_lock(where, exclusive=False):
                    stores[where] = load_store(where)
        folder = where.parent if where is not None else None
        for path in (pair.composite, pair.mask, pair.real):
            entry = stores[where].get(_key(path, folder))
            total += 1
            stale += entry is None or entry.stat != _stat(path)
    return stale, total
