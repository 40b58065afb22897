"""What feeds the DALI training graph: the photos' encoded bytes, the crop windows and the mask windows.

A TrainFeed is DALI's external source for one epoch's batches (batch mode, `batch_info=True`): for
batch `iteration` it reads the composite and real files as bytes, draws each pair's crop from the
dataset index (giftnet.pipeline.index) and cuts the crop's mask window out of the mask's runs
(giftnet.pipeline.runs_file, memory-mapped), so no mask file is read or decoded here or in DALI:
the whole mask is expanded from its runs only in the rare case its grid cannot decide the
keep-background rule. The index also says which photos DALI decodes as stored (images.dali_bytes'
policy), so no header is read here either. DALI then decodes the photos' windows (on the GPU where
it can). Everything it returns is a pure function of (seed, epoch, pair index), so it runs the same
in DALI's worker processes (`parallel=True`, which pickles it: the runs file is named, not copied)
as in the main process.

Why the mask goes as pixels: DALI decodes PNG on the host even with a GPU, and at 1024 px its
window decode took 2.5-3 ms a mask against 0.1-0.2 ms for the runs window (bench.data_masks).
The runs are augment.read_mask's pixels exactly, for any mask file (RGB, 16-bit, soft...). Should
the runs file go away under a running feed (another process refreshed the index and removed the
old one), the masks are decoded from their files instead, with a warning: slower, same pixels.

Photos DALI would not decode as stored (EXIF-rotated, 16-bit, palette...) are decoded here and
handed on as lossless PNG.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from giftnet.pipeline.augment import CropParams, read_mask
from giftnet.pipeline.feed_files import read_bytes, read_files
from giftnet.pipeline.images import encode_png, read_rgb
from giftnet.pipeline.index_grid import MaskSummary, sample_crop_indexed
from giftnet.pipeline.mask_runs import MaskRuns, encode, window
from giftnet.pipeline.pairs import DatasetError, Pair
from giftnet.pipeline.runs_file import RunsTable

__all__ = ["LAYOUTS", "NUM_OUTPUTS", "TrainFeed", "read_bytes", "reencoded_photo"]

NUM_OUTPUTS = 7  # composite, real (encoded), mask window (pixels), anchor (x, y), shape (w, h), flip, index
LAYOUTS = ["", "", "HWC", "", "", "", ""]
_WARNED: list[str] = []  # the runs-file warning, given once per process


class _BatchInfo(Protocol):
    """What DALI's external source passes with batch=True (nvidia.dali.types.BatchInfo)."""

    iteration: int


def reencoded_photo(path: str) -> np.ndarray:
    """What DALI decodes for a photo the index says it would not decode as stored (EXIF-rotated,
    16-bit, palette...): images.read_rgb's pixels as a lossless PNG."""
    return np.frombuffer(encode_png(read_rgb(path)), dtype=np.uint8)


class TrainFeed:
    """DALI's source for `batches` of one epoch; call with a BatchInfo (or an int) per batch.

    A call returns the batch's columns: the composite and real bytes as lists of arrays (views of
    one buffer, reused once they are dropped: feed_files.read_files), the mask windows as a list of
    (h, w, 1) uint8 arrays, then the anchors (B, 2), shapes (B, 2), flips (B,) and indices (B,) as
    one array each.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        masks: Sequence[MaskSummary],
        *,
        runs: RunsTable,
        native: Sequence[tuple[bool, bool]],
        crop_size: int,
        seed: int,
        epoch: int,
        batches: Sequence[np.ndarray],
    ) -> None:
        # Plain strings and arrays: cheap to pickle into DALI's worker processes.
        self.files = [(str(p.composite), str(p.real)) for p in pairs]
        self.mask_files = [str(p.mask) for p in pairs]  # only if the runs file went away (_runs)
        self.masks = list(masks)
        self.runs = runs
        self.native = [(bool(c), bool(r)) for c, r in native]  # from the index: no header read per sample
        if not len(self.files) == len(self.masks) == len(self.native) == len(self.runs):
            raise ValueError("pairs, masks, runs and native must be aligned (one entry per pair)")
        self.crop_size, self.seed, self.epoch = crop_size, seed, epoch
        self.batches = [np.asarray(b, dtype=np.int64) for b in batches]
        self.decoded = 0  # masks expanded whole from their runs because the grid could not decide

    def _runs(self, index: int) -> MaskRuns:
        """Pair `index`'s mask runs; from the mask file if the runs file went away since the index was
        loaded (another process refreshed the index and removed it), with one warning per process."""
        try:
            return self.runs[index]
        except DatasetError as e:
            if not _WARNED:
                _WARNED.append(str(e))
                warnings.warn(f"{e}; decoding the masks from their files instead (slower)", stacklevel=2)
            return encode(read_mask(Path(self.mask_files[index])))

    def _crop(self, index: int, runs: MaskRuns) -> CropParams:
        """Pair `index`'s crop from the index; the whole mask comes from its runs when the grid cannot decide."""
        summary = self.masks[index]
        crop, decoded = sample_crop_indexed(
            summary,
            lambda: window(runs, 0, 0, *summary.shape),
            crop_size=self.crop_size,
            seed=self.seed,
            epoch=self.epoch,
            index=index,
        )
        self.decoded += decoded
        return crop

    def __call__(self, info: int | _BatchInfo) -> list:
        iteration = info if isinstance(info, int) else info.iteration
        if iteration >= len(self.batches):
            raise StopIteration
        batch = self.batches[iteration].tolist()
        # The photos DALI decodes as stored are read in one go; the rest (rare) are decoded here.
        stored = [(j, k, self.files[i][k]) for j, i in enumerate(batch) for k in (0, 1) if self.native[i][k]]
        cols: list[list[np.ndarray | None]] = [[None] * len(batch) for _ in range(3)]
        for (j, k, _), data in zip(stored, read_files([path for *_, path in stored]), strict=True):
            cols[k][j] = data
        n = len(batch)
        anchor, shape, flip = np.empty((n, 2), np.int32), np.empty((n, 2), np.int32), np.empty(n, np.int32)
        for j, i in enumerate(batch):
            runs = self._runs(i)
            crop = self._crop(i, runs)
            anchor[j], shape[j], flip[j] = (crop.left, crop.top), (crop.width, crop.height), crop.flip
            cols[2][j] = window(runs, crop.top, crop.left, crop.height, crop.width)[:, :, None]
            # the one decoder's policy: EXIF-rotated, 16-bit, palette... photos reach DALI re-encoded
            for k in (0, 1):
                if cols[k][j] is None:
                    cols[k][j] = reencoded_photo(self.files[i][k])
        return [*cols, anchor, shape, flip, np.array(batch, dtype=np.int64)]  # dense: DALI takes no strides
