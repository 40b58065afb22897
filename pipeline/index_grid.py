"""The dataset index's coarse foreground grid per mask, and crops drawn from it without a decode.

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
from collections.abc import Callable

import numpy as np

from giftnet.pipeline.augment import CropParams, area_from_sum, draw_crop, foreground_area, median_foreground
from giftnet.pipeline.pairs import DatasetError

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
