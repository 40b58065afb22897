"""`python -m giftnet.pipeline.builders.synth`: a small iHarmony4-layout dataset made from real photos, the demo's default data.

Each real image is a random crop of a photo (the real photos shipped in pipeline/data/lalonde_efros
by default, or a folder such as the Lalonde-Efros photos of the iHarmony4 repository); each gets 1-2 object masks (annotated when the folder has them,
else procedural) and each mask 1-2 composites whose foreground colour is changed by one of the
iHarmony4 or ccHarmony kinds in giftnet.pipeline.builders.colour. Composite and real differ only inside the mask;
both are saved as JPEG (quality 95, 4:4:4), so outside the mask they differ only in the 8x8 JPEG
blocks that touch the mask's edge. Same arguments, same bytes: a finished build is reused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from giftnet.errors import UsageError, run_cli
from giftnet.pipeline.builders.colour import CHANGE_KINDS, change_foreground
from giftnet.pipeline.builders.subset_writer import (
    fingerprint,
    finish_subset,
    manifest_complete,
    read_manifest,
    scratch_subset,
    write_list,
)
from giftnet.pipeline.builders.synth_masks import random_mask
from giftnet.pipeline.builders.synth_sources import (
    Photo,
    bundled_folder,
    bundled_photos,
    folder_photos,
    load_photo,
    source_files,
    split_photos,
)
from giftnet.pipeline.ihd import COMPOSITE_DIR, MASK_DIR, REAL_DIR
from giftnet.pipeline.images import JPEG_QUALITY, write_jpeg, write_mask

PROG = "python -m giftnet.pipeline.builders.synth"
SUBSET = "HSynth"
SYNTH_VERSION = 3
FMSE_RANGE = (100.0, 6000.0)  # accepted foreground MSE (0-255 scale); iHarmony4's composites average ~1387
REF_SIZE = 64  # side of the reference crops whose colour statistics a transfer moves toward
MAX_ASPECT = 1.5
ANNOTATED_AREA = (0.01, 0.9)  # an annotated object must cover this fraction of a crop to be used


def _crop(photo: Photo, short: int, rng: np.random.Generator, keep_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A random crop (35-100% of the largest fitting box, aspect 1-1.5, random flip) resized so its short side is `short`."""
    rgb, mask = load_photo(photo)
    h0, w0 = rgb.shape[:2]
    aspect = rng.uniform(1.0, MAX_ASPECT)
    landscape = w0 >= h0
    out_w, out_h = (round(short * aspect), short) if landscape else (short, round(short * aspect))
    ratio = out_w / out_h
    for _ in range(10):
        box_h = min(h0, w0 / ratio) * rng.uniform(0.35 if mask is None else 0.6, 1.0)
        box_w = box_h * ratio
        x0, y0 = rng.uniform(0, w0 - box_w), rng.uniform(0, h0 - box_h)
        box = (x0, y0, x0 + box_w, y0 + box_h)
        if mask is None or not keep_mask:
            break
        crop_mask = _resize(mask, box, (out_w, out_h), Image.Resampling.NEAREST) > 127
        if ANNOTATED_AREA[0] <= crop_mask.mean() <= ANNOTATED_AREA[1]:
            break
    flip = bool(rng.integers(2))
    real = _resize(rgb, box, (out_w, out_h), Image.Resampling.BICUBIC)
    kept = (
        _resize(mask, box, (out_w, out_h), Image.Resampling.NEAREST) > 127 if mask is not None and keep_mask else None
    )
    if kept is not None and not ANNOTATED_AREA[0] <= kept.mean() <= ANNOTATED_AREA[1]:
        kept = None  # the annotated object is (nearly) absent or fills the crop: draw a mask instead
    if flip:
        real = real[:, ::-1]
        kept = kept[:, ::-1] if kept is not None else None
    return np.ascontiguousarray(real), None if kept is None else np.ascontiguousarray(kept)


def _resize(
    array: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int], resample: int
) -> np.ndarray:
    image = Image.fromarray(array.astype(np.uint8) * (255 if array.dtype == bool else 1))
    return np.asarray(image.resize(size, resample, box=box))


def _reference(photos: list[Photo], rng: np.random.Generator) -> np.ndarray:
    """Pixels of an object region of another random crop: the colour target of a transfer."""
    photo = photos[int(rng.integers(len(photos)))]
    rgb, _ = _crop(photo, REF_SIZE, rng, keep_mask=False)
    mask, _ = random_mask(rgb.shape[0], rgb.shape[1], rng)
    return rgb[mask]


def _composite(
    real: np.ndarray, mask: np.ndarray, photos: list[Photo], rng: np.random.Generator
) -> tuple[np.ndarray, str, float]:
    """Change the foreground until its fMSE is in FMSE_RANGE (or the last of 8 tries): (composite, what, fMSE)."""
    fg = real[mask]
    for _ in range(8):
        kind = CHANGE_KINDS[int(rng.integers(len(CHANGE_KINDS)))]
        ref = _reference(photos, rng) if kind in ("lab_transfer", "histogram") else fg
        changed, what = change_foreground(fg, ref, kind, rng)
        fmse = float(np.mean((changed.astype(np.float64) - fg) ** 2))
        if FMSE_RANGE[0] <= fmse <= FMSE_RANGE[1]:
            break
    composite = real.copy()
    composite[mask] = changed
    return composite, what, fmse


def _write_split(
    scratch: Path, split: str, n: int, photos: list[Photo], size: int, seed: int, records: list[str]
) -> list[str]:
    """Write n composites (and their reals and masks) of one split; returns the composite file names."""
    names: list[str] = []
    split_id = {"train": 0, "test": 1}[split]
    index = 0
    while len(names) < n:
        rng = np.random.default_rng([seed, split_id, index])
        photo = photos[index % len(photos)]
        real, annotated = _crop(photo, size, rng, keep_mask=True)
        real_id = f"{photo.tag}-{split[:2]}{index:05d}"
        write_jpeg(scratch / REAL_DIR / f"{real_id}.jpg", real)
        n_masks = 1 if annotated is not None else 1 + int(rng.integers(2))
        for k in range(1, n_masks + 1):
            mask, shape = (
                (annotated, "annotated") if annotated is not None else random_mask(real.shape[0], real.shape[1], rng)
            )
            write_mask(scratch / MASK_DIR / f"{real_id}_{k}.png", mask)
            for j in range(1, 2 + int(rng.integers(2))):
                if len(names) == n:
                    break
                composite, what, fmse = _composite(real, mask, photos, rng)
                name = f"{real_id}_{k}_{j}.jpg"
                write_jpeg(scratch / COMPOSITE_DIR / name, composite)
                names.append(name)
                records.append(f"{name},{split},{photo.group},{shape},{what},{fmse:.1f}")
        index += 1
    return names


def _params(n_train: int, n_test: int, size: int, seed: int, source: Path | None) -> dict:
    source_id = "bundled" if source is None else str(Path(source).resolve())
    params = {"builder": "synth", "version": SYNTH_VERSION, "n_train": n_train, "n_test": n_test, "size": size}
    params |= {"seed": seed, "source": source_id, "jpeg_quality": JPEG_QUALITY}
    params["inputs"] = fingerprint(source_files(bundled_folder() if source is None else Path(source)))
    return params


def build_demo_dataset(
    out: Path, *, n_train: int, n_test: int, size: int = 256, seed: int = 0, source: Path | None = None
) -> Path:
    """Write `out/HSynth/` (composite_images/, masks/, real_images/, HSynth_train.txt, HSynth_test.txt,
    pairs.csv, manifest.json) and return `out`, the root to give `read_pairs`.

    Reuses a finished build with the same arguments (so a trainer may call this on every start).
    `size` is the short side of every image (the long side is 1-1.5 times it).
    """
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train} and {n_test}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    out = Path(out)
    params = _params(n_train, n_test, size, seed, source)
    existing = read_manifest(out / SUBSET)
    if existing is not None and existing.get("params") == params and manifest_complete(out / SUBSET, existing):
        return out
    photos = folder_photos(bundled_folder() if source is None else Path(source))
    by_split = split_photos(photos)
    out.mkdir(parents=True, exist_ok=True)
    records = ["composite,split,photo,mask,change,fmse"]
    with scratch_subset(out, SUBSET) as scratch:
        for split, n in (("train", n_train), ("test", n_test)):
            names = _write_split(scratch, split, n, by_split[split], size, seed, records) if n else []
            write_list(scratch, SUBSET, split, names)
        (scratch / "pairs.csv").write_text("\n".join(records) + "\n", encoding="utf-8")
        finish_subset(scratch, out / SUBSET, params)
    return out


def upscaled_photos(photos: list[Photo], size: int) -> tuple[list[str], list[str]]:
    """(photos every crop of which is upscaled, photos whose smaller crops are), by short side.

    A crop spans 35-100% of the largest box that fits the photo and is resized so its short side
    is `size`: a photo (or train/test region) shorter than `size` is always enlarged, one shorter
    than size / 0.35 whenever a small crop is drawn. Enlarged crops are blurrier than real photos.
    """
    always, sometimes = [], []
    for photo in photos:
        short = min(load_photo(photo)[0].shape[:2])
        if short < size:
            always.append(photo.group)
        elif short * 0.35 < size:
            sometimes.append(photo.group)
    return sorted(set(always)), sorted(set(sometimes) - set(always))


def _warn_upscaling(source: Path | None, size: int) -> None:
    photos = bundled_photos() if source is None else folder_photos(Path(source))
    regions = [p for split in split_photos(photos).values() for p in split]
    always, sometimes = upscaled_photos(regions, size)
    if always:
        print(
            f"warning: {len(always)} of {len(photos)} photos are smaller than --size {size} and every crop of them "
            f"is upscaled: {', '.join(always[:5])}{' ...' if len(always) > 5 else ''}",
            file=sys.stderr,
        )
    if sometimes:
        print(
            f"warning: {len(sometimes)} more photos are upscaled when a small crop (35-100% of the photo) is drawn",
            file=sys.stderr,
        )


def _refuse_other_arguments(out: Path, params: dict, overwrite: bool) -> None:
    """A finished dataset built with other arguments is replaced only with --overwrite."""
    existing = read_manifest(out / SUBSET)
    if existing is None or overwrite or existing.get("params") == params:
        return
    old = existing.get("params") or {}
    changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in changed)
    raise UsageError(
        f"{out / SUBSET} was built with other arguments ({shown}); choose another --out or add --overwrite"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m giftnet.pipeline.builders.synth --out DIR [--source FOLDER] [--n-train N ...]`."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write (HSynth/ inside)")
    parser.add_argument(
        "--source",
        type=Path,
        help="photos: images/NAME.jpg (+ masks/NAME.png) or a flat folder (default: the shipped photos)",
    )
    parser.add_argument("--n-train", type=int, default=512, help="training pairs (default 512)")
    parser.add_argument("--n-test", type=int, default=128, help="test pairs (default 128)")
    parser.add_argument("--size", type=int, default=256, help="short side of each image in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset built with other arguments")
    args = parser.parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.n_train < 1 or args.n_test < 0:
        raise UsageError(f"need --n-train >= 1 and --n-test >= 0, got {args.n_train} and {args.n_test}")
    if args.size < 16:
        raise UsageError(f"--size must be at least 16 pixels, got {args.size}")
    _refuse_other_arguments(
        args.out, _params(args.n_train, args.n_test, args.size, args.seed, args.source), args.overwrite
    )
    _warn_upscaling(args.source, args.size)
    root = build_demo_dataset(
        args.out, n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed, source=args.source
    )
    print(f"{root / SUBSET}: {args.n_train} train and {args.n_test} test pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
