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

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from giftnet.pipeline.augment import read_mask
from giftnet.pipeline.images import encode_png, read_rgb
from giftnet.pipeline.index import MaskSummary, sample_crop_indexed
from giftnet.pipeline.pairs import DatasetError, Pair

NUM_OUTPUTS = 7  # composite, real, mask (encoded), anchor (x, y), shape (w, h), flip, index
LAYOUTS = ["", "", "", "", "", "", ""]


class _BatchInfo(Protocol):
    """What DALI's external source passes with batch=True (nvidia.dali.types.BatchInfo)."""

    iteration: int


def read_bytes(path: str | Path) -> np.ndarray:
    """A file's bytes as a uint8 array; DatasetError naming the file if it is unreadable or empty.

    One read into a fresh array (np.fromfile costs twice as much: the feeder's hottest call).
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


def photo_bytes(path: str, native: bool) -> np.ndarray:
    """What DALI decodes for a photo: its bytes as stored when the index says DALI decodes them to
    images.read_rgb's pixels (`native`), else read_rgb's pixels as a lossless PNG."""
    return read_bytes(path) if native else np.frombuffer(encode_png(read_rgb(path)), dtype=np.uint8)


def encode_mask(mask: np.ndarray) -> np.ndarray:
    """A uint8 (H, W) mask as the bytes of an 8-bit grayscale PNG (fast, lossless)."""
    out = io.BytesIO()
    Image.fromarray(mask, "L").save(out, format="PNG", compress_level=1)
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


class TrainFeed:
    """DALI's source for `batches` of one epoch; call with a BatchInfo (or an int) per batch."""

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

    def sample(self, index: int) -> tuple[np.ndarray, ...]:
        """The external source's outputs for pair `index`."""
        comp_path, real_path, mask_path = self.files[index]
        summary = self.masks[index]
        crop, decoded = sample_crop_indexed(
            summary,
            lambda: read_mask(Path(mask_path)),
            crop_size=self.crop_size,
            seed=self.seed,
            epoch=self.epoch,
            index=index,
        )
        self.decoded += decoded
        mask = read_bytes(mask_path) if summary.plain else encode_mask(read_mask(Path(mask_path)))
        comp_native, real_native = self.native[index]
        return (
            # the one decoder's policy: EXIF-rotated, 16-bit, palette... photos reach DALI re-encoded
            photo_bytes(comp_path, comp_native),
            photo_bytes(real_path, real_native),
            mask,
            np.array([crop.left, crop.top], dtype=np.int32),
            np.array([crop.width, crop.height], dtype=np.int32),
            np.array(int(crop.flip), dtype=np.int32),
            np.array(index, dtype=np.int64),
        )

    def __call__(self, info: int | _BatchInfo) -> list[list[np.ndarray]]:
        iteration = info if isinstance(info, int) else info.iteration
        if iteration >= len(self.batches):
            raise StopIteration
        samples = [self.sample(int(i)) for i in self.batches[iteration]]
        return [list(col) for col in zip(*samples, strict=True)]
