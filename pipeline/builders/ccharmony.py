"""`python -m giftnet.pipeline.builders.ccharmony`: a ccHarmony-style dataset in the iHarmony4 layout from photos,
foreground masks and patch CSVs (or the released matrices).

The 350 photos are not in the ccHarmony repository (bcmi/Image-Harmonization-Dataset-ccHarmony,
which releases the masks, patch colours, matrices and split lists): they are the colour-constancy
photos of the NUS 8-camera dataset (Cheng, Prasad and Brown, 2014; names like
`Canon1DsMkIII_0077`) and of the Gehler-Shi ColorChecker dataset (Gehler et al., 2008, as
re-processed by Shi and Funt; names like `8D5U5531`, `IMG_0323`), downloaded from those projects.
Masks whose photo is absent are counted as missing, not fatal, so a partial photo set builds.

For each foreground `NAME_k` of photo a, `per_foreground` other photos b are drawn; the composite
`X_k_j.jpg` is photo a with its foreground replaced by T'_b(T_a(foreground)) (paper section 4),
the real image `X.jpg` is photo a. X is NAME with '_' replaced by '-' so the iHarmony4 naming
rules (real id = text before the first '_') recover it. `pairs.csv` records which b each used.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from giftnet.errors import UsageError, run_cli
from giftnet.messages import first_n
from giftnet.pipeline.builders.cc_matching import load_matrix, matrices_from_patches, read_patch_csv, transfer
from giftnet.pipeline.builders.subset_writer import fingerprint, finish_subset, scratch_subset, write_list
from giftnet.pipeline.builders.unpack import folder_or_zip
from giftnet.pipeline.ihd import COMPOSITE_DIR, MASK_DIR, REAL_DIR, read_list_lines
from giftnet.pipeline.images import read_mask, read_rgb, write_jpeg, write_mask
from giftnet.pipeline.pairs import DatasetError

PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")
BUILDER_VERSION = 1


@dataclass
class BuildReport:
    """What a build did: foregrounds built (and composites), skipped (in neither split list), missing."""

    root: Path
    built: int = 0
    composites: int = 0
    skipped: int = 0
    missing: list[str] = field(default_factory=list)  # mask names whose photo is not in the photo folder

    def summary(self) -> str:
        return (
            f"built {self.built} foregrounds ({self.composites} composites), skipped {self.skipped} "
            f"(in neither split list), missing {len(self.missing)} (no photo)"
        )


def _find_photos(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: photo folder does not exist")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in PHOTO_EXTS}


def _foregrounds(mask_dir: Path, photos: dict[str, Path]) -> tuple[list[tuple[str, str, Path]], list[str]]:
    """((foreground id NAME_k, photo NAME, mask path) for every mask whose photo exists, masks without one)."""
    if not mask_dir.is_dir():
        raise DatasetError(f"{mask_dir}: mask folder does not exist")
    out, missing = [], []
    for mask in sorted(mask_dir.glob("*.png")):
        photo = mask.stem.rsplit("_", 1)[0]
        if "_" in mask.stem and photo in photos:
            out.append((mask.stem, photo, mask))
        elif "_" in mask.stem:
            missing.append(mask.stem)
    if not out:
        raise DatasetError(
            f"{mask_dir}: no masks NAME_k.png matching a photo in the photo folder "
            "(the photos come from the NUS 8-camera and Gehler-Shi datasets; see docs/data.md)"
        )
    return out, missing


def _colours(
    patches: Path | None, released: Path | None
) -> tuple[list[Path], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(files read, photo name -> (T, T_reverse)): released .npy files when given, else fits of the CSVs."""
    if released is not None:
        folder, suffix = released, "_reverse.npy"
    elif patches is not None:
        folder, suffix = patches, ".csv"
    else:
        raise ValueError("give patch colours or released matrices")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder does not exist")
    files = sorted(folder.glob(f"*{suffix}"))
    if len(files) < 2:
        raise DatasetError(f"{folder}: need the colours of at least two photos (*{suffix}), found {len(files)}")
    out = {}
    for path in files:
        name = path.name[: -len(suffix)]
        if released is not None:
            out[name] = (load_matrix(folder / f"{name}.npy"), load_matrix(path))
        else:
            out[name] = matrices_from_patches(read_patch_csv(path))
    return files, out


def _split_of(foreground: str, photo: str, train: set[str] | None, test: set[str] | None) -> str | None:
    if train is None and test is None:
        return "test" if zlib.crc32(photo.encode()) % 4 == 0 else "train"  # photo-level 3:1 split
    if train is not None and foreground in train:
        return "train"
    if test is not None and foreground in test:
        return "test"
    return None


def _fit_mask(mask: np.ndarray, shape: tuple[int, int], path: Path) -> np.ndarray:
    """The mask at the photo's size: nearest-neighbour resize when only the scale differs."""
    if mask.shape == shape:
        return mask > 0.5
    if abs(mask.shape[0] / mask.shape[1] - shape[0] / shape[1]) > 0.02 * shape[0] / shape[1]:
        raise DatasetError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, photo is {shape[1]}x{shape[0]}")
    image = Image.fromarray((mask > 0.5).astype(np.uint8) * 255, "L")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 127


def _load_photo(path: Path, max_side: int | None) -> np.ndarray:
    rgb = read_rgb(path)
    if max_side and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))
    return rgb


def _write_foreground(
    scratch: Path,
    real: np.ndarray,
    photo: str,
    fg: str,
    mask_path: Path,
    mats: dict[str, tuple[np.ndarray, np.ndarray]],
    targets: list[str],
) -> list[str]:
    """Real image (once per photo), mask and one composite per target photo; returns the composite names."""
    mask = _fit_mask(read_mask(mask_path), real.shape[:2], mask_path)
    if not mask.any():
        raise DatasetError(f"{mask_path}: mask is empty")
    real_id = photo.replace("_", "-")
    mask_id = f"{real_id}_{fg.rsplit('_', 1)[1]}"
    if not (scratch / REAL_DIR / f"{real_id}.jpg").exists():
        write_jpeg(scratch / REAL_DIR / f"{real_id}.jpg", real)
    write_mask(scratch / MASK_DIR / f"{mask_id}.png", mask)
    names = []
    for j, target in enumerate(targets, start=1):
        composite = real.copy()
        composite[mask] = transfer(real[mask], mats[photo][0], mats[target][1])
        names.append(f"{mask_id}_{j}.jpg")
        write_jpeg(scratch / COMPOSITE_DIR / names[-1], composite)
    return names


def build_cc_dataset(
    photos: Path,
    masks: Path,
    patches: Path | None,
    out: Path,
    *,
    subset: str = "ccHarmony",
    per_foreground: int = 10,
    train_list: Path | None = None,
    test_list: Path | None = None,
    matrices: Path | None = None,
    max_side: int | None = None,
    seed: int = 0,
) -> BuildReport:
    """Write `out/<subset>/` (iHarmony4 layout + pairs.csv); the report's root is `out`.

    Deterministic for a seed. `matrices` (released IMAGE.npy / IMAGE_reverse.npy) replace the
    fits of `patches`, which may then be None.
    """
    if per_foreground < 1:
        raise ValueError(f"per_foreground must be >= 1, got {per_foreground}")
    photos_by_name = _find_photos(Path(photos))
    fgs, missing = _foregrounds(Path(masks), photos_by_name)
    report = BuildReport(Path(out), missing=missing)
    colour_files, mats = _colours(Path(patches) if patches else None, Path(matrices) if matrices else None)
    train = {s for _, s in read_list_lines(Path(train_list))} if train_list else None
    test = {s for _, s in read_list_lines(Path(test_list))} if test_list else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with scratch_subset(out, subset) as scratch:
        lists, records = _write_composites(
            scratch, fgs, photos_by_name, mats, colour_files, report,
            train=train, test=test, per_foreground=per_foreground, max_side=max_side, seed=seed,
        )  # fmt: skip
        if not lists["train"] and not lists["test"]:
            raise DatasetError(f"{masks}: no foreground belongs to the train or test list")
        for split, names in lists.items():
            write_list(scratch, subset, split, names)
        (scratch / "pairs.csv").write_text("\n".join(records) + "\n", encoding="utf-8")
        inputs = list(photos_by_name.values()) + [m for _, _, m in fgs] + colour_files
        inputs += [Path(p) for p in (train_list, test_list) if p]
        params = {
            "builder": "ccharmony",
            "version": BUILDER_VERSION,
            "seed": seed,
            "per_foreground": per_foreground,
            "max_side": max_side,
            "matrices": "released" if matrices else "fitted",
            "inputs": fingerprint(inputs),
        }
        finish_subset(scratch, out / subset, params)
    return report


def _write_composites(
    scratch: Path,
    fgs: list,
    photos_by_name: dict[str, Path],
    mats: dict,
    colour_files: list[Path],
    report: BuildReport,
    *,
    train: set[str] | None,
    test: set[str] | None,
    per_foreground: int,
    max_side: int | None,
    seed: int,
) -> tuple[dict[str, list[str]], list[str]]:
    """Every foreground's composites toward `per_foreground` other photos' colours: the split
    lists and the pairs.csv records. Foreground `index`'s targets depend on (seed, index) only."""
    lists: dict[str, list[str]] = {"train": [], "test": []}
    records = ["composite,photo,foreground,target_photo,split"]
    have_patches = sorted(mats)
    for index, (fg, photo, mask_path) in enumerate(fgs):
        split = _split_of(fg, photo, train, test)
        if split is None:
            report.skipped += 1
            continue
        if photo not in mats:
            raise DatasetError(f"{colour_files[0].parent}: no colours for photo {photo!r} of mask {mask_path}")
        rng = np.random.default_rng([seed, index])
        others = [n for n in have_patches if n != photo]
        picks = rng.choice(len(others), size=min(per_foreground, len(others)), replace=False)
        targets = [others[int(i)] for i in sorted(picks)]
        real = _load_photo(photos_by_name[photo], max_side)
        names = _write_foreground(scratch, real, photo, fg, mask_path, mats, targets)
        lists[split] += names
        report.built += 1
        report.composites += len(names)
        records += [f"{n},{photo},{fg},{t},{split}" for n, t in zip(names, targets, strict=True)]
    return lists, records


PROG = "python -m giftnet.pipeline.builders.ccharmony"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build a ccHarmony-style dataset (iHarmony4 layout) by polynomial illumination transfer. "
        "The released masks, patch colours and matrices come from bcmi/Image-Harmonization-Dataset-ccHarmony "
        "(folders or the released .zip files); the 350 photos from the NUS 8-camera and Gehler-Shi "
        "colour-constancy datasets (see docs/data.md).",
    )
    parser.add_argument("--photos", type=Path, required=True, help="photos NAME.jpg (or .png/.tif): a folder or .zip")
    parser.add_argument(
        "--masks", type=Path, required=True, help="foreground masks NAME_a.png (folder or foreground_masks.zip)"
    )
    parser.add_argument(
        "--patches", type=Path, help="patch colours NAME.csv, 24 rows R,G,B (folder or patch_colors.zip)"
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write (a subset folder inside)")
    parser.add_argument("--subset", default="ccHarmony", help="subset folder name (default ccHarmony)")
    parser.add_argument("--per-foreground", type=int, default=10, help="composites per foreground (paper: 10)")
    parser.add_argument("--train-list", type=Path, help="foreground ids of the train split (released train_list.txt)")
    parser.add_argument("--test-list", type=Path, help="foreground ids of the test split (released test_list.txt)")
    parser.add_argument(
        "--matrices",
        type=Path,
        help="released IMAGE.npy/IMAGE_reverse.npy instead of fitting --patches "
        "(folder or polynomial_matching_coefficients.zip)",
    )
    parser.add_argument("--max-side", type=int, default=0, help="resize photos so the long side is at most this")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.patches is None and args.matrices is None:
        raise UsageError("give --patches (colours to fit) or --matrices (the released matrices)")
    if args.per_foreground < 1:
        raise UsageError(f"--per-foreground must be >= 1, got {args.per_foreground}")
    with contextlib.ExitStack() as stack:

        def unpack(path: Path, what: str) -> Path:
            return stack.enter_context(folder_or_zip(path, what))

        report = build_cc_dataset(
            unpack(args.photos, "--photos"),
            unpack(args.masks, "--masks"),
            None if args.matrices or args.patches is None else unpack(args.patches, "--patches"),
            args.out,
            subset=args.subset,
            per_foreground=args.per_foreground,
            train_list=args.train_list,
            test_list=args.test_list,
            matrices=None if args.matrices is None else unpack(args.matrices, "--matrices"),
            max_side=args.max_side or None,
            seed=args.seed,
        )
    print(f"wrote {report.root / args.subset}: {report.summary()}")
    if report.missing:
        print(f"masks without a photo in {args.photos}: {first_n(report.missing, 5, sep=', ')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m giftnet.pipeline.builders.ccharmony --photos DIR --masks DIR (--patches DIR | --matrices DIR) --out DIR`."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
