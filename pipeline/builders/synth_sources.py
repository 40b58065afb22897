"""Photos for the demo dataset: the real photos shipped in pipeline/data, or a folder of photos (with masks).

The package ships 300 outdoor photographs of the Lalonde-Efros set (iHarmony4 repository, MIT), each
with its annotated object mask (pipeline/data/lalonde_efros/SOURCE.txt). Photos are grouped (a
group is one photo unless a source says otherwise). With many groups, whole groups go to train or
test, so test pairs come from photos training never saw. With few (a user's small folder), holding
out whole photos leaves too little to learn from, so each photo is cut in two along its long side:
test pairs are cropped from the last 30%, training pairs from the rest, and no pixel of a test
image is ever seen in training.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from giftnet.pipeline.images import read_mask, read_rgb
from giftnet.pipeline.pairs import DatasetError

PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
TEST_EVERY = 5  # one photo group in five goes to the test split
REGION_SPLIT_BELOW = 20  # fewer groups than this: split every photo into train and test regions
TEST_FRACTION = 0.3  # of the long side, for region splits


@dataclasses.dataclass(frozen=True)
class Photo:
    """A source photo: its tag (used in file names: letters, digits, '-'), group, and lazy loaders."""

    tag: str
    group: str
    load: Callable[[], np.ndarray]
    load_mask: Callable[[], np.ndarray] | None = None


def _tag(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-") or "photo"


BUNDLED = "lalonde_efros"  # pipeline/data/BUNDLED: images/NAME.jpg + masks/NAME.png (see SOURCE.txt there)


def bundled_folder() -> Path:
    """The folder of real photos shipped with the package (300 Lalonde-Efros photos, 160 px, with masks)."""
    from importlib import resources

    return Path(str(resources.files("giftnet.pipeline") / "data" / BUNDLED))


def bundled_photos() -> list[Photo]:
    """The shipped real photos with their annotated object masks (they load offline)."""
    return folder_photos(bundled_folder())


def folder_photos(folder: Path) -> list[Photo]:
    """Photos of `folder`: `images/NAME.jpg` with `masks/NAME.png` (lalonde-efros layout), or loose photos."""
    folder = Path(folder)
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    if not image_dir.is_dir():
        raise DatasetError(f"{folder}: source folder does not exist")
    mask_dir = folder / "masks"
    photos = []
    for path in sorted(image_dir.iterdir()):
        if path.suffix not in PHOTO_EXTS:
            continue
        mask_path = mask_dir / f"{path.stem}.png"
        load_mask = functools.partial(read_mask, mask_path) if mask_path.is_file() else None
        photos.append(Photo(_tag(path.stem), path.stem, functools.partial(read_rgb, path), load_mask))
    if not photos:
        raise DatasetError(f"{image_dir}: no photos ({', '.join(PHOTO_EXTS)}) found")
    return photos


def source_files(folder: Path) -> list[Path]:
    """Every file a folder source reads (for the build's fingerprint)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in PHOTO_EXTS)


def cut_region(array: np.ndarray, split: str) -> np.ndarray:
    """The train part (first 70% of the long side) or the test part (the rest) of an image or mask."""
    h, w = array.shape[:2]
    if w >= h:
        k = round(w * (1 - TEST_FRACTION))
        return np.ascontiguousarray(array[:, :k] if split == "train" else array[:, k:])
    k = round(h * (1 - TEST_FRACTION))
    return np.ascontiguousarray(array[:k] if split == "train" else array[k:])


def _region_load(load: Callable[[], np.ndarray], split: str) -> np.ndarray:
    return cut_region(load(), split)


def region(photo: Photo, split: str) -> Photo:
    """The part of `photo` that belongs to `split`."""
    load_mask = functools.partial(_region_load, photo.load_mask, split) if photo.load_mask is not None else None
    return Photo(photo.tag, photo.group, functools.partial(_region_load, photo.load, split), load_mask)


def split_photos(photos: list[Photo]) -> dict[str, list[Photo]]:
    """Train and test sources: whole groups (one in TEST_EVERY, by a hash of the group name, at least
    one) when there are REGION_SPLIT_BELOW groups or more, else disjoint regions of every photo."""
    groups = sorted({p.group for p in photos})
    if len(groups) < REGION_SPLIT_BELOW:
        return {split: [region(p, split) for p in photos] for split in ("train", "test")}
    test_groups = {g for g in groups if zlib.crc32(g.encode()) % TEST_EVERY == 0}
    if not test_groups or len(test_groups) == len(groups):
        test_groups = {groups[len(groups) // 2]}
    return {
        "train": [p for p in photos if p.group not in test_groups],
        "test": [p for p in photos if p.group in test_groups],
    }


@functools.lru_cache(maxsize=64)
def _cached(photo: Photo) -> tuple[np.ndarray, np.ndarray | None]:
    rgb = photo.load()
    mask = photo.load_mask() > 0.5 if photo.load_mask is not None else None
    if mask is not None and mask.shape != rgb.shape[:2]:
        raise DatasetError(f"source photo {photo.group}: mask size {mask.shape} differs from photo {rgb.shape[:2]}")
    return rgb, mask


def load_photo(photo: Photo) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB uint8, annotated mask or None), cached: photos are reused for many crops."""
    return _cached(photo)
