"""`python -m giftnet.pipeline.check ROOT`: validate an iHarmony4-layout dataset before a long run.

Finds, in one pass, every missing file, zero-byte / unreadable / truncated image, composite-real or
mask size mismatch, empty mask, mask with differing channels or too many intermediate values, and
list-file oddities (including lines that leave the dataset root), and images declaring more pixels
than the decoder's budget. Files the loaders read in a special way (EXIF-rotated, 16-bit, grayscale,
palette, CMYK, with alpha) are decoded by giftnet.pipeline.images, the loaders' own decoder, and reported as
warnings saying what the loaders do with them; a full mask is a warning. Exit status 1 if any error,
2 for a bad argument. With `--index`, a clean dataset then gets its index (giftnet.pipeline.index) built or
refreshed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from giftnet.errors import DataError, UsageError, run_cli
from giftnet.messages import first_n
from giftnet.pipeline.ihd import SPLITS, list_files_for, read_list_file
from giftnet.pipeline.images import Header, mask_channels, mask_from_channels, open_image, read_header, read_rgb
from giftnet.pipeline.index import INDEX_NAME, index_file_for, index_pairs, stale_entries
from giftnet.pipeline.pairs import DatasetError, Pair

Severity = Literal["error", "warning"]
SOFT_FRACTION = 0.02  # a mask with more than 2% of its pixels strictly between 0 and 255 (+-8) is not binary


@dataclasses.dataclass(frozen=True)
class Problem:
    """One finding: its severity, the file at fault and what is wrong."""

    severity: Severity
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.severity:<7} {self.path}: {self.message}"


@dataclasses.dataclass
class _FileInfo:
    size: tuple[int, int] | None  # (width, height); None when the file could not be read
    problems: list[Problem]


def _check_list_text(list_file: Path) -> list[Problem]:
    """Line-ending, blank-line and duplicate findings of a list file (readers tolerate all of these)."""
    try:
        raw = list_file.read_bytes()
    except OSError:
        return []  # the reader reports a missing list file
    out = []
    if raw.startswith(b"\xef\xbb\xbf"):
        out.append(Problem("warning", list_file, "starts with a UTF-8 byte-order mark"))
    if b"\r\n" in raw:
        out.append(Problem("warning", list_file, "Windows line endings (CRLF); pipeline readers accept them"))
    lines = raw.decode("utf-8", errors="replace").splitlines()
    blank = sum(1 for line in lines if not line.strip())
    if blank:
        out.append(Problem("warning", list_file, f"{blank} blank line(s), skipped by readers"))
    counts = Counter(line.strip() for line in lines if line.strip())
    duplicates = {line: c for line, c in counts.items() if c > 1}
    if duplicates:
        first = next(iter(duplicates))
        out.append(Problem("warning", list_file, f"{len(duplicates)} duplicated line(s), e.g. {first!r}"))
    return out


def _header(path: Path) -> tuple[Header | None, list[Problem]]:
    """Read the header without decoding pixels: existence, regular file, zero bytes, pixel budget."""
    try:
        return read_header(path), []
    except DataError as err:
        return None, [Problem("error", path, _message(path, err))]


def _message(path: Path, err: DataError) -> str:
    return str(err).removeprefix(f"{path}: ")


def _check_photo(path: Path, decode: bool) -> _FileInfo:
    header, problems = _header(path)
    if header is None:
        return _FileInfo(None, problems)
    if decode:
        try:
            read_rgb(path)
        except DataError as err:
            return _FileInfo(None, [Problem("error", path, _message(path, err))])
    notes = header.notes()
    if notes:
        problems.append(Problem("warning", path, f"{'; '.join(notes)} (mode {header.mode}); the loaders do this"))
    return _FileInfo(header.size, problems)


def _check_mask(path: Path, decode: bool) -> _FileInfo:
    header, problems = _header(path)
    if header is None or not decode:
        return _FileInfo(None if header is None else header.size, problems)
    try:
        image, _ = open_image(path)
        colour, alpha = mask_channels(image)
    except DataError as err:
        return _FileInfo(None, [Problem("error", path, _message(path, err))])
    if colour.shape[2] > 1 and np.ptp(colour, axis=2).max() > 1.5 / 255:
        problems.append(Problem("error", path, f"{colour.shape[2]} channels that differ; a mask must be one channel"))
    notes = []
    if alpha is not None and np.ptp(alpha) > 0:
        if np.ptp(colour[:, :, 0]) == 0:
            notes.append(
                "the mask is in the alpha channel; pipeline readers use it, tools reading channel 0 see nothing"
            )
        else:
            notes.append("alpha channel varies; pipeline readers ignore it and use channel 0")
    if header.sixteen_bit or header.mode == "I":
        notes.append("16-bit mask; readers scale it to 0-1")
    if header.orientation != 1:
        notes.append(f"rotated by EXIF (orientation {header.orientation}) before use")
    if notes:
        problems.append(Problem("warning", path, f"{'; '.join(notes)} (mode {header.mode})"))
    mask = mask_from_channels(colour, alpha)
    if mask.max() < 0.5:
        problems.append(Problem("error", path, "mask is empty (no pixel above 127)"))
    elif mask.min() >= 0.5:
        problems.append(Problem("warning", path, "mask covers the whole image"))
    soft = float(np.mean((mask > 8 / 255) & (mask < 247 / 255)))
    if soft > SOFT_FRACTION:
        problems.append(Problem("error", path, f"not binary: {soft:.1%} of pixels are between 8 and 247 (JPEG?)"))
    return _FileInfo(header.size, problems)


def _pairs_and_list_problems(
    root: Path, subsets: list[str] | None, splits: tuple[str, ...]
) -> tuple[list[Pair], list[Problem]]:
    pairs: list[Pair] = []
    problems: list[Problem] = []
    for split in splits:
        try:
            sources = list_files_for(root, subsets, split)
        except DatasetError as err:
            problems.append(Problem("error", root, str(err).removeprefix(f"{root}: ")))
            continue
        for list_file, base, keep in sources:
            problems += _check_list_text(list_file)
            try:
                got, bad = read_list_file(list_file, base, keep)
            except DatasetError as err:
                problems.append(Problem("error", list_file, str(err).removeprefix(f"{list_file}: ")))
                continue
            pairs += got
            seen_missing: set[Path] = set()
            for line in bad:
                for missing in line.missing:
                    if missing not in seen_missing:
                        seen_missing.add(missing)
                        where = f"{line.list_file.name} line {line.line_no}"
                        problems.append(Problem("error", missing, f"file does not exist (named by {where})"))
                if not line.missing:
                    problems.append(Problem("error", line.list_file, f"line {line.line_no}: {line.reason}"))
            if not got and not bad:
                problems.append(Problem("warning", list_file, "list has no pairs"))
    return pairs, problems


def check_dataset(
    root: str | Path,
    subsets: list[str] | None = None,
    split: str = "all",
    *,
    decode: bool = True,
    workers: int | None = None,
) -> list[Problem]:
    """Every problem of the dataset at `root` (split 'train', 'test' or 'all'); empty list when clean.

    decode=False checks only list lines, file existence, zero-byte files, image headers and sizes:
    fast enough for a trainer to run on every start. decode=True also decodes every image (truncation)
    and inspects every mask's values.
    """
    return _check(root, subsets, split, decode, workers)[1]


def _check(
    root: str | Path, subsets: list[str] | None, split: str, decode: bool, workers: int | None
) -> tuple[list[Pair], list[Problem]]:
    root = Path(root)
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not root.is_dir():
        return [], [Problem("error", root, "dataset root is not a directory")]
    pairs, problems = _pairs_and_list_problems(root, subsets, SPLITS if split == "all" else (split,))
    photos = sorted({p.composite for p in pairs} | {p.real for p in pairs})
    masks = sorted({p.mask for p in pairs})
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
        infos = dict(zip(photos, pool.map(lambda p: _check_photo(p, decode), photos), strict=True))
        infos |= dict(zip(masks, pool.map(lambda p: _check_mask(p, decode), masks), strict=True))
    for path in (*photos, *masks):
        problems += infos[path].problems
    for pair in pairs:
        composite, real, mask = (infos[p].size for p in (pair.composite, pair.real, pair.mask))
        if composite and real and composite != real:
            message = (
                f"composite is {composite[0]}x{composite[1]} but real image {pair.real.name} is {real[0]}x{real[1]}"
            )
            problems.append(Problem("error", pair.composite, message))
        if composite and mask and composite != mask:
            message = (
                f"mask is {mask[0]}x{mask[1]} but composite {pair.composite.name} is {composite[0]}x{composite[1]}"
            )
            problems.append(Problem("error", pair.mask, message))
    return pairs, problems


def require_valid(
    root: str | Path,
    subsets: list[str] | None = None,
    split: str = "all",
    *,
    decode: bool = False,
    workers: int | None = None,
    advice: str = "",
) -> list[Problem]:
    """Refuse a dataset with errors: DatasetError listing them (up to 20); returns the warnings otherwise.

    For a trainer's start: decode=False (the default here) checks lists, existence, empty files,
    headers (pixel budget) and sizes. `advice` is appended to the message's hint.
    """
    problems = check_dataset(root, subsets, split, decode=decode, workers=workers)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        hint = f"run `python -m giftnet.pipeline.check {root}` for the full report{advice}"
        where = "" if split == "all" else f" in the {split} split"
        raise DatasetError(f"{root}: {len(errors)} dataset error(s){where}:\n  {first_n(errors, 20)}\n{hint}")
    return problems


def _index_line(pairs: list[Pair], build: bool, workers: int | None) -> str:
    """Build / refresh the dataset index (build=True) or say how many of its entries are out of date."""
    if build:
        built = index_pairs(pairs, workers=workers)
        where = ", ".join(str(p) for p in built.files) or "nothing to write"
        return f"index: {built.rebuilt} entr(ies) built or refreshed for {len(pairs)} pair(s); {where}"
    if not any(p is not None and p.is_file() for p in {index_file_for(pair) for pair in pairs}):
        return "index: none yet (the loaders build it on first use, or run with --index)"
    stale, total = stale_entries(pairs)
    return f"index: {stale} of {total} file entries missing or out of date" + (" (--index refreshes)" if stale else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m giftnet.pipeline.check", description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="dataset root (holding subset folders) or one subset folder")
    parser.add_argument("--subsets", nargs="+", help="only these subsets (default: every subset with a list)")
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="headers only: do not decode images or read masks")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: up to 8)")
    parser.add_argument(
        "--index",
        action="store_true",
        help=f"after a check without errors, build or refresh the dataset index (SUBSET/{INDEX_NAME})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print every problem, one a line, then a summary; exit status 1 if any is an error."""
    args = build_parser().parse_args(argv)
    return run_cli("giftnet.pipeline.check", lambda: _report(args))


def _report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    console = Console(highlight=False, soft_wrap=True)
    pairs, problems = _check(args.root, args.subsets, args.split, not args.quick, args.workers)
    colour = {"error": "bold red", "warning": "yellow"}
    for problem in problems:
        console.print(
            f"[{colour[problem.severity]}]{problem.severity:<7}[/] {escape(str(problem.path))}: "
            f"{escape(problem.message)}"
        )
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    console.print(f"{args.root}: {len(pairs)} pair(s) checked, {errors} error(s), {warnings} warning(s)")
    if pairs and not errors:
        console.print(escape(_index_line(pairs, args.index, args.workers)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
