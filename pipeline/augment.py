"""Training randomness shared by the DALI and PyTorch loaders: epoch order, shards, crop and flip.

Every random choice is a pure function of (seed, epoch, pair index, attempt), drawn from a numpy
Generator seeded by a SeedSequence of those numbers, never from a stateful global stream. So both
backends crop a pair identically, an epoch can be replayed, and a run resumed at (epoch, batch)
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from giftnet.pipeline import images
from giftnet.pipeline.pairs import DatasetError

# Separate streams for the epoch order and the per-pair crop, so neither can alias the other.
_ORDER_STREAM = 0x0D0E
_CROP_STREAM = 0xC809

SCALE = (0.5, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_PROB = 0.5
KEEP_BACKGROUND_PROB = 0.05
MAX_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class CropParams:
    """A crop window in source pixels (top, left, height, width) and whether to mirror it."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def _rng(*key: int) -> np.random.Generator:
    if any(k < 0 for k in key):
        raise ValueError(f"seed, epoch, index and attempt must be non-negative, got {key}")
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def epoch_order(num_pairs: int, *, seed: int, epoch: int) -> np.ndarray:
    """The permutation of all pair indices used in `epoch` (the same on every rank)."""
    return _rng(_ORDER_STREAM, seed, epoch).permutation(num_pairs).astype(np.int64)


def shard_order(num_pairs: int, *, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's pair indices for `epoch`: the epoch's permutation dealt round-robin to the ranks.

    Shards are disjoint and equally long; the `num_pairs % world_size` pairs left at the end of
    the permutation are skipped in that epoch (a different few each epoch). With world_size 1, or
    when world_size divides num_pairs, the shards cover every pair.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    order = epoch_order(num_pairs, seed=seed, epoch=epoch)
    per_rank = num_pairs // world_size
    return order[rank : per_rank * world_size : world_size]


def batches_per_epoch(shard_len: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch for a shard of `shard_len` pairs."""
    return shard_len // batch_size if drop_last else -(-shard_len // batch_size)


def epoch_batches(
    num_pairs: int,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    drop_last: bool,
    start_batch: int = 0,
) -> list[np.ndarray]:
    """The pair indices of each batch of `epoch` on this rank, from batch `start_batch` on."""
    order = shard_order(num_pairs, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    n = batches_per_epoch(len(order), batch_size, drop_last)
    if not 0 <= start_batch <= n:
        raise ValueError(f"start_batch must be in [0, {n}], got {start_batch}")
    return [order[b * batch_size : (b + 1) * batch_size] for b in range(start_batch, n)]


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How one rank cuts every epoch into batches: the part both training loaders share."""

    num_pairs: int
    batch_size: int
    seed: int
    rank: int
    world_size: int
    drop_last: bool

    def __len__(self) -> int:
        return batches_per_epoch(self.num_pairs // self.world_size, self.batch_size, self.drop_last)

    def batches(self, epoch: int, start_batch: int = 0) -> list[np.ndarray]:
        return epoch_batches(
            self.num_pairs,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            start_batch=start_batch,
        )


def random_resized_crop(
    height: int, width: int, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (top, left, h, w), with its centre-crop fallback."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def foreground_area(mask: np.ndarray, top: int, left: int, h: int, w: int, crop_size: int) -> float:
    """Foreground area, in output pixels, of the crop window resized to crop_size x crop_size."""
    window = mask[top : top + h, left : left + w]
    return area_from_sum(int(window.sum(dtype=np.int64)), h, w, crop_size)


def area_from_sum(total: int, h: int, w: int, crop_size: int) -> float:
    """foreground_area from the window's sum of mask values: monotonic in `total`, so bounds on the
    sum give bounds on the area (giftnet.pipeline.index decides the keep-background rule that way)."""
    return float(total) / 255.0 * (crop_size * crop_size) / (h * w)


def median_foreground(mask: np.ndarray) -> tuple[int, int] | None:
    """(y, x) of the median non-zero pixel in raster order, None for an empty mask."""
    fg = np.flatnonzero(mask)
    if fg.size == 0:
        return None
    y, x = divmod(int(fg[fg.size // 2]), mask.shape[1])
    return y, x


def centre_window(
    point: tuple[int, int] | None, shape: tuple[int, int], top: int, left: int, h: int, w: int
) -> tuple[int, int]:
    """Move an (h, w) window inside an image of `shape` so that it is centred on `point` (if any)."""
    if point is None:
        return top, left
    y, x = point
    return min(max(y - h // 2, 0), shape[0] - h), min(max(x - w // 2, 0), shape[1] - w)


def sample_crop(
    mask: np.ndarray,
    *,
    crop_size: int,
    seed: int,
    epoch: int,
    index: int,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
    flip_prob: float = FLIP_PROB,
    keep_background_prob: float = KEEP_BACKGROUND_PROB,
    max_attempts: int = MAX_ATTEMPTS,
) -> CropParams:
    """The crop and flip of pair `index` in `epoch`, for the pair's uint8 (H, W) mask.

    Keep-background rule (iSSAM's `check_augmented_sample`): a crop whose resized mask holds at
    most one pixel of foreground is drawn again unless a `keep_background_prob` draw keeps it.
    After `max_attempts` rejections the last window is moved onto the foreground, so an epoch
    never stalls (an empty mask keeps the last window as drawn).
    """
    return draw_crop(
        mask.shape,
        lambda top, left, h, w: foreground_area(mask, top, left, h, w, crop_size) > 1.0,
        lambda: median_foreground(mask),
        seed=seed,
        epoch=epoch,
        index=index,
        scale=scale,
        ratio=ratio,
        flip_prob=flip_prob,
        keep_background_prob=keep_background_prob,
        max_attempts=max_attempts,
    )


def draw_crop(
    shape: tuple[int, int],
    has_foreground: Callable[[int, int, int, int], bool],
    median_point: Callable[[], tuple[int, int] | None],
    *,
    seed: int,
    epoch: int,
    index: int,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
    flip_prob: float = FLIP_PROB,
    keep_background_prob: float = KEEP_BACKGROUND_PROB,
    max_attempts: int = MAX_ATTEMPTS,
) -> CropParams:
    """sample_crop's draws for an image of `shape`, asking `has_foreground(top, left, h, w)` whether
    a window passes the keep-background rule and `median_point()` where to move the last one.

    The mask itself is not needed: giftnet.pipeline.index answers both questions from its summary, so
    the same draws (and so the same crops) come without decoding the mask.
    """
    height, width = shape
    for attempt in range(max_attempts):
        rng = _rng(_CROP_STREAM, seed, epoch, index, attempt)
        top, left, h, w = random_resized_crop(height, width, rng, scale, ratio)
        flip = bool(rng.random() < flip_prob)
        keep = bool(rng.random() < keep_background_prob)
        if keep or has_foreground(top, left, h, w):
            return CropParams(top, left, h, w, flip)
    top, left = centre_window(median_point(), shape, top, left, h, w)
    return CropParams(top, left, h, w, flip)


def read_mask(path: Path) -> np.ndarray:
    """A mask file as a writable uint8 (H, W) array, 0 background to 255 foreground.

    Decoded by giftnet.pipeline.images.read_mask, the one mask reader of the package (channel 0; an
    alpha-only mask's alpha; 16-bit masks scaled), so the loaders see what the checker checked.
    """
    return np.rint(images.read_mask(path) * 255.0).astype(np.uint8)


def image_size(path: Path, data: bytes | None = None) -> tuple[int, int]:
    """(height, width) from an image's header, without decoding it (EXIF rotation applied for a path)."""
    if data is None:
        header = images.read_header(path)  # the one decoder's view: rotated size, pixel budget, regular file
        return header.height, header.width
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            width, height = img.size
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: not a readable image (unknown format)") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from None
    return height, width


def check_same_size(pair_files: tuple[Path, Path, Path], sizes: tuple[tuple[int, int], ...]) -> None:
    """Raise DatasetError if the composite, mask and real image of a pair differ in size."""
    if len(set(sizes)) > 1:
        desc = ", ".join(f"{p} is {w}x{h}" for p, (h, w) in zip(pair_files, sizes, strict=True))
        raise DatasetError(f"pair sizes differ: {desc}")
