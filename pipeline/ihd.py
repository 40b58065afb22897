"""Readers for the iHarmony4 layout (docs/data.md): list files -> `Pair`s.

A subset folder holds `composite_images/`, `masks/`, `real_images/` and `<Subset>_train.txt` /
`<Subset>_test.txt`. A list line names a composite `X_Y_Z.jpg` (bare, as in the per-subset lists, or
`HCOCO/composite_images/X_Y_Z.jpg` as in the global `IHD_train.txt`); its real image is
`real_images/X.jpg` (text before the first '_') and its mask `masks/X_Y.png` (drop the last '_Z').
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal, overload

from giftnet.messages import first_n
from giftnet.pipeline.pairs import DatasetError, Pair

SPLITS = ("train", "test")
COMPOSITE_DIR, MASK_DIR, REAL_DIR = "composite_images", "masks", "real_images"
REAL_EXT, MASK_EXT = ".jpg", ".png"
GLOBAL_LIST = "IHD_{split}.txt"
_MAX_LISTED = 10


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A list line that cannot become a Pair: where it is and why (missing files or a bad name)."""

    list_file: Path
    line_no: int
    line: str
    reason: str
    missing: tuple[Path, ...] = ()
    subset: str = ""

    def __str__(self) -> str:
        return f"{self.list_file}:{self.line_no}: {self.reason}"


def split_name(composite_stem: str) -> tuple[str, str]:
    """(real id, mask id) of a composite stem `X_Y_Z`: X is the text before the first '_', X_Y drops '_Z'."""
    parts = composite_stem.split("_")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"composite name {composite_stem!r} does not follow the X_Y_Z pattern")
    return parts[0], composite_stem.rsplit("_", 1)[0]


def _check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def _is_subset_dir(path: Path) -> bool:
    return (path / COMPOSITE_DIR).is_dir()


def subset_list_file(subset_dir: Path, split: str) -> Path:
    """`<subset_dir>/<Subset>_<split>.txt`."""
    return subset_dir / f"{subset_dir.name}_{split}.txt"


def read_list_lines(list_file: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; CRLF, BOM and '#' comments tolerated."""
    try:
        text = list_file.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{list_file}: list file does not exist") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{list_file}: list file is not UTF-8 text ({err})") from None
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


def list_subsets(root: str | Path, split: str = "train") -> list[str]:
    """Subsets of `root` that have a list for `split`: folders with `<Subset>_<split>.txt`, else those
    named in the global `IHD_<split>.txt`. A `root` that is itself a subset folder gives its own name."""
    _check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    if _is_subset_dir(root):
        return [root.name] if subset_list_file(root, split).is_file() else []
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and subset_list_file(d, split).is_file())
    if found:
        return found
    global_list = root / GLOBAL_LIST.format(split=split)
    if not global_list.is_file():
        return []
    names = set()
    for _, line in read_list_lines(global_list):
        parts = line.replace("\\", "/").split("/")
        if len(parts) >= 3:
            names.add(parts[-3])
    return sorted(names)


class _Listing:
    """File names present in a subset's three folders, listed once (one readdir instead of 3 stats a pair)."""

    def __init__(self, subset_dir: Path) -> None:
        self.dir = subset_dir
        self.names = {}
        for folder in (COMPOSITE_DIR, MASK_DIR, REAL_DIR):
            try:
                self.names[folder] = set(os.listdir(subset_dir / folder))
            except OSError:
                self.names[folder] = set()

    def missing(self, folder: str, name: str) -> Path | None:
        return None if name in self.names[folder] else self.dir / folder / name


def _pair_from_line(
    subset_dir: Path, listing: _Listing, file_name: str, list_file: Path, number: int, line: str
) -> Pair | BadLine:
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    try:
        real_id, mask_id = split_name(stem)
    except ValueError as err:
        return BadLine(list_file, number, line, str(err), subset=subset_dir.name)
    names = ((COMPOSITE_DIR, file_name), (MASK_DIR, mask_id + MASK_EXT), (REAL_DIR, real_id + REAL_EXT))
    missing = tuple(p for p in (listing.missing(folder, name) for folder, name in names) if p is not None)
    if missing:
        what = ", ".join(str(p) for p in missing)
        return BadLine(list_file, number, line, f"missing {what}", missing, subset_dir.name)
    return Pair(
        composite=subset_dir / COMPOSITE_DIR / file_name,
        mask=subset_dir / MASK_DIR / (mask_id + MASK_EXT),
        real=subset_dir / REAL_DIR / (real_id + REAL_EXT),
        subset=subset_dir.name,
        name=stem,
    )


def read_list_file(
    list_file: str | Path, base: str | Path | None = None, subsets: list[str] | None = None
) -> tuple[list[Pair], list[BadLine]]:
    """Pairs and bad lines of one list file, in either form.

    A bare line (`X_Y_Z.jpg`) belongs to the subset folder holding the list (or `base`); a line with
    folders (`HCOCO/composite_images/X_Y_Z.jpg`) is resolved against `base` (default: the list's folder).
    `subsets` keeps only lines of those subsets.
    """
    list_file = Path(list_file)
    base = Path(base) if base is not None else list_file.parent
    listings: dict[Path, _Listing] = {}
    pairs: list[Pair] = []
    bad: list[BadLine] = []
    for number, line in read_list_lines(list_file):
        unix = line.replace("\\", "/")
        parts = [p for p in unix.split("/") if p and p != "."]
        if unix.startswith("/") or (len(unix) > 1 and unix[1] == ":") or ".." in parts:
            reason = "path leaves the dataset root (absolute or with '..'); list lines are relative to it"
            bad.append(BadLine(list_file, number, line, reason))
            continue
        if len(parts) == 1:
            subset_dir = base
        elif len(parts) >= 3 and parts[-2] == COMPOSITE_DIR:
            subset_dir = base.joinpath(*parts[:-2])
        elif len(parts) == 2 and parts[0] == COMPOSITE_DIR:
            subset_dir = base
        else:
            bad.append(BadLine(list_file, number, line, f"expected NAME.jpg or SUBSET/{COMPOSITE_DIR}/NAME.jpg"))
            continue
        if subsets is not None and subset_dir.name not in subsets:
            continue
        if subset_dir not in listings:
            listings[subset_dir] = _Listing(subset_dir)
        item = _pair_from_line(subset_dir, listings[subset_dir], parts[-1], list_file, number, line)
        if isinstance(item, Pair):
            pairs.append(item)
        else:
            bad.append(item)
    return pairs, bad


def list_files_for(
    root: str | Path, subsets: list[str] | None, split: str
) -> list[tuple[Path, Path, list[str] | None]]:
    """(list file, base folder, subsets to keep or None for all) that `read_pairs` reads for one split."""
    _check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    if _is_subset_dir(root):
        if subsets is not None and root.name not in subsets:
            raise DatasetError(f"{root}: is the subset {root.name!r}, not one of {subsets}")
        return [(subset_list_file(root, split), root, None)]
    per_subset = [d for d in sorted(root.iterdir()) if d.is_dir() and subset_list_file(d, split).is_file()]
    global_list = root / GLOBAL_LIST.format(split=split)
    if subsets is None:
        if per_subset:
            return [(subset_list_file(d, split), d, None) for d in per_subset]
        if global_list.is_file():
            return [(global_list, root, None)]
        raise DatasetError(f"{root}: no <Subset>/<Subset>_{split}.txt and no {global_list.name}")
    out: list[tuple[Path, Path, list[str] | None]] = []
    from_global = []
    for name in subsets:
        candidate = subset_list_file(root / name, split)
        if candidate.is_file():
            out.append((candidate, root / name, None))
        elif global_list.is_file():
            from_global.append(name)
        else:
            raise DatasetError(f"{candidate}: list file for subset {name!r} does not exist (nor {global_list})")
    if from_global:
        out.append((global_list, root, from_global))
    return out


@overload
def read_pairs(
    root: str | Path, subsets: list[str] | None = ..., split: str = ..., *, strict: Literal[True] = ...
) -> list[Pair]: ...
@overload
def read_pairs(
    root: str | Path, subsets: list[str] | None = ..., split: str = ..., *, strict: Literal[False]
) -> tuple[list[Pair], list[BadLine]]: ...
def read_pairs(
    root: str | Path, subsets: list[str] | None = None, split: str = "train", *, strict: bool = True
) -> list[Pair] | tuple[list[Pair], list[BadLine]]:
    """Every pair of `split` ('train', 'test' or 'all') in the chosen subsets of an iHarmony4-layout root.

    `subsets=None` reads every subset folder with a list for the split (or the global IHD list).
    strict=True raises DatasetError naming each bad list line (list file, line number, missing path);
    strict=False returns `(pairs, bad_lines)` so a trainer can skip and log them.
    """
    _check_split(split, (*SPLITS, "all"))
    if isinstance(subsets, str):
        subsets = [subsets]
    pairs: list[Pair] = []
    bad: list[BadLine] = []
    for one_split in SPLITS if split == "all" else (split,):
        for list_file, base, keep in list_files_for(root, subsets, one_split):
            got, wrong = read_list_file(list_file, base, keep)
            pairs += got
            bad += wrong
    if strict and subsets is not None:
        absent = sorted(set(subsets) - {p.subset for p in pairs} - {b.subset for b in bad})
        if absent:
            raise DatasetError(f"{root}: no {split} pairs for subsets {absent}")
    if strict and bad:
        raise DatasetError(f"{len(bad)} bad list line(s) under {root}:\n  {first_n(bad, _MAX_LISTED)}")
    if strict:
        return pairs
    return pairs, bad
