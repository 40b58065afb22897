"""Masks as runs of equal values: any crop window's exact pixels without decoding a PNG.

Why. At 1024 px on one core DALI's CPU decoder takes about 2.6 ms per mask, a third of the
training graph (composite 2.3 ms, real 2.3 ms, both windows only). DALI does the same with a GPU:
its mixed decoder runs PNG on the host, so on a GPU node the mask decode is most of the CPU left
per pair. Object masks are blobs, so their rows hold a few runs each: a 1024 px mask is about
2,000 runs (5 bytes each), and `window` cuts a crop out of them in about 0.1 ms with numpy.

Layout. The mask's raster (row-major) is split into runs that never cross a row's end: `starts`
holds each run's first flat pixel index, followed by one sentinel h*w; `values` each run's value.
Every uint8 mask is represented exactly, soft ones too (a soft edge just makes shorter runs).

Used by: the dataset index (giftnet.pipeline.index), which stores every mask's runs in a file
beside it (giftnet.pipeline.runs_file), and the DALI feeder (giftnet.pipeline.dali_feed), which
hands DALI the crop's window; bench.data_masks measures this against DALI's PNG decode.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskRuns:
    """One mask as runs: shape (h, w), starts (runs + 1,) int64 (int32 from a runs file) with sentinel
    h*w, values (runs,) uint8."""

    shape: tuple[int, int]
    starts: np.ndarray
    values: np.ndarray

    @property
    def runs(self) -> int:
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes to store it with int32 starts (what an on-disk cache would hold)."""
        return self.runs * 5 + 4


def encode(mask: np.ndarray) -> MaskRuns:
    """A uint8 (H, W) mask (or (H, W, 1)) as runs of equal values, each within one row."""
    if mask.dtype != np.uint8:
        raise ValueError(f"mask must be uint8, got {mask.dtype}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W) or (H, W, 1), got shape {mask.shape}")
    h, w = mask.shape
    change = np.ones((h, w), dtype=bool)  # column 0 always starts a run: no run crosses a row's end
    np.not_equal(mask[:, 1:], mask[:, :-1], out=change[:, 1:])
    starts = np.flatnonzero(change)
    values = np.ascontiguousarray(mask).reshape(-1)[starts]
    return MaskRuns((h, w), np.append(starts, h * w).astype(np.int64, copy=False), values)


def window(runs: MaskRuns, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 pixels of mask[top:top+height, left:left+width], from the runs."""
    h, w = runs.shape
    if min(top, left, height, width) < 0 or top + height > h or left + width > w:
        raise ValueError(f"window {(top, left, height, width)} (top, left, height, width) is outside the mask {h}x{w}")
    if height == 0 or width == 0:
        return np.zeros((height, width), np.uint8)
    starts = runs.starts
    lo = np.arange(top, top + height, dtype=np.int64) * w + left  # each row's first pixel in the window
    hi = lo + width
    first = np.searchsorted(starts, lo, side="right") - 1  # the run holding that pixel
    count = np.searchsorted(starts, hi, side="left") - first  # runs that reach into the row's window
    row = np.repeat(np.arange(height), count)  # the window row of each run piece
    idx = np.arange(row.shape[0], dtype=np.int64) + (first - (np.cumsum(count) - count))[row]
    begin = np.maximum(starts[idx], lo[row])
    end = np.minimum(starts[idx + 1], hi[row])
    return np.repeat(runs.values[idx], end - begin).reshape(height, width)
