"""What feeds the DALI training graph: encoded bytes and crop windows, with no decoding in Python.

A TrainFeed is DALI's external source for one epoch's batches (batch mode, `batch_info=True`): for
batch `iteration` it reads the composite, real and mask files as bytes and draws each pair's crop
from the dataset index (giftnet.pipeline.index), so the mask is decoded here only in the rare case its
grid cannot decide the keep-background rule. The index also says which photos DALI decodes as
stored (images.dali_bytes' policy), so no header is read here either. DALI then decodes all three (the mask on the device
where it can). Everything it returns is a pure function of (seed, epoch, pair index), so it runs
the same in DALI's worker processes (`parallel=True`, which pickles it) as in the main process.

Photos it would not (EXIF-rotated, 16-bit, palette...) are decoded here and handed on as lossless
PNG; masks that DALI would not decode to the pixels augment.read_mask gives (anything but an 8-bit
grayscale PNG: RGB, 16-bit, alpha-only...) are decoded here and handed on re-encoded as 8-bit PNG.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from giftnet.pipeline.augment import CropParams, read_mask
from giftnet.pipeline.feed_files import plain_mask, read_bytes, read_files
from giftnet.pipeline.images import encode_png, read_rgb
from giftnet.pipeline.index import MaskSummary, sample_crop_indexed
from giftnet.pipeline.pairs import Pair

__all__ = ["LAYOUTS", "NUM_OUTPUTS", "TrainFeed", "encode_mask", "read_bytes", "reencoded_photo"]

NUM_OUTPUTS = 7  # composite, real, mask (encoded), anchor (x, y), shape (w, h), flip, index
LAYOUTS = ["", "", "", "", "", "", ""]


class _BatchInfo(Protocol):
    """What DALI's external source passes with batch=True (nvidia.dali.types.BatchInfo)."""

    iteration: int


def reencoded_photo(path: str) -> np.ndarray:
    """What DALI decodes for a photo the index says it would not decode as stored (EXIF-rotated,
    16-bit, palette...): images.read_rgb's pixels as a lossless PNG."""
    return np.frombuffer(encode_png(read_rgb(path)), dtype=np.uint8)


def encode_mask(mask: np.ndarray) -> np.ndarray:
    """A uint8 (H, W) mask as the bytes of an 8-bit grayscale PNG (fast, lossless)."""
    out = io.BytesIO()
    Image.fromarray(mask, "L").save(out, format="PNG", compress_level=1)
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


class TrainFeed:
    """DALI's source for `batches` of one epoch; call with a BatchInfo (or an int) per batch.

    A call returns the batch's columns: the composite, real and mask bytes as lists of arrays
    (views of one buffer, reused once they are dropped: feed_files.read_files), then the
    anchors (B, 2), shapes (B, 2), flips (B,) and indices (B,) as one array each.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        masks: Sequence[MaskSummary],
        *,
        native: Sequence[tuple[bool, bool]],
        crop_size: int,
        seed: int,
        epoch: int,
        batches: Sequence[np.ndarray],
    ) -> None:
        # Plain strings and arrays: cheap to pickle into DALI's worker processes.
        self.files = [(str(p.composite), str(p.real), str(p.mask)) for p in pairs]
        self.masks = list(masks)
        self.native = [(bool(c), bool(r)) for c, r in native]  # from the index: no header read per sample
        if not len(self.files) == len(self.masks) == len(self.native):
            raise ValueError("pairs, masks and native must be aligned (one entry per pair)")
        self.crop_size, self.seed, self.epoch = crop_size, seed, epoch
        self.batches = [np.asarray(b, dtype=np.int64) for b in batches]
        self.decoded = 0  # masks decoded in this process because the grid could not decide
        # Per pair: which of (composite, real, mask) DALI decodes as stored (the rest is decoded here).
        self.stored = [(c, r, m.plain) for (c, r), m in zip(self.native, self.masks, strict=True)]

    def _crop(self, index: int, load: Callable[[], np.ndarray]) -> CropParams:
        """Pair `index`'s crop from the index; `load()` gives the mask when the grid cannot decide."""
        summary = self.masks[index]
        crop, decoded = sample_crop_indexed(
            summary, load, crop_size=self.crop_size, seed=self.seed, epoch=self.epoch, index=index
        )
        self.decoded += decoded
        return crop

    def __call__(self, info: int | _BatchInfo) -> list:
        iteration = info if isinstance(info, int) else info.iteration
        if iteration >= len(self.batches):
            raise StopIteration
        batch = self.batches[iteration].tolist()
        # The files DALI decodes as stored are read in one go; the rest (rare) are decoded here.
        stored = [
            (j, k, path)
            for j, i in enumerate(batch)
            for k, (path, as_stored) in enumerate(zip(self.files[i], self.stored[i], strict=True))
            if as_stored
        ]
        cols: list[list[np.ndarray | None]] = [[None] * len(batch) for _ in range(3)]
        for (j, k, _), data in zip(stored, read_files([path for *_, path in stored]), strict=True):
            cols[k][j] = data
        n = len(batch)
        anchor, shape, flip = np.empty((n, 2), np.int32), np.empty((n, 2), np.int32), np.empty(n, np.int32)
        for j, i in enumerate(batch):
            comp_path, real_path, mask_path = self.files[i]
            mask_bytes = cols[2][j]
            if mask_bytes is None:  # a mask DALI would not decode as stored: decoded once, re-encoded
                mask = read_mask(Path(mask_path))
                crop = self._crop(i, functools.partial(_given, mask))
                cols[2][j] = encode_mask(mask)
            else:  # decoded (from the bytes read) only if the grid cannot decide
                crop = self._crop(i, functools.partial(plain_mask, mask_bytes, mask_path))
            anchor[j], shape[j], flip[j] = (crop.left, crop.top), (crop.width, crop.height), crop.flip
            # the one decoder's policy: EXIF-rotated, 16-bit, palette... photos reach DALI re-encoded
            if cols[0][j] is None:
                cols[0][j] = reencoded_photo(comp_path)
            if cols[1][j] is None:
                cols[1][j] = reencoded_photo(real_path)
        return [*cols, anchor, shape, flip, np.array(batch, dtype=np.int64)]  # dense: DALI takes no strides


def _given(mask: np.ndarray) -> np.ndarray:
    return mask
