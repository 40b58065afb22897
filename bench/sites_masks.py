"""How much of each GIFT site's output is background, on real masks: the work a kernel may skip.

A mask goes to 256x256 as the model sees it (bilinear without antialiasing, the "Fixed256"
resize), then to each site's map size by area averaging exactly as giftnet.gift.resize_mask
does, so a cell is background only when no foreground pixel touches it. A 2-D output tile of
th x tw map cells is skippable when every cell in it is exactly 0: there the transformed map
equals the input (forward and dx copy it; the weight/style correlation gets nothing). Tiles at
the right and bottom border are clipped to the map and count like any other. "flatN" tiles
are N consecutive pixels in row-major order (how the kernels tiled before they skipped; kept
for comparison). The kernels' tiles are 8x8 and 8x16 (forward, dx) and 8x16 and 4x8 (the
weight/style correlation's pixel steps).
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from giftnet.errors import DataError, UsageError
from giftnet.fileio import check_regular_file
from giftnet.gift import resize_mask
from giftnet.pipeline.images import read_mask

IMAGE = 256
TILES = ("8x8", "8x16", "4x8", "16x16", "8x32", "32x32", "flat64", "flat128")
MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def parse_tile(tile: str) -> tuple[str, int, int]:
    """("2d", th, tw) for "THxTW", ("flat", n, 0) for "flatN"."""
    if m := re.fullmatch(r"(\d+)x(\d+)", tile):
        th, tw = int(m[1]), int(m[2])
        if th > 0 and tw > 0:
            return "2d", th, tw
    if (m := re.fullmatch(r"flat(\d+)", tile)) and int(m[1]) > 0:
        return "flat", int(m[1]), 0
    raise UsageError(f"tile {tile!r}: expected HxW (e.g. 8x32) or flatN (e.g. flat64)")


def tile_any(mask: torch.Tensor, tile: str) -> torch.Tensor:
    """For (..., H, W) maps, a bool per tile (..., n_tiles): True where any cell is non-zero."""
    kind, a, b = parse_tile(tile)
    fg = (mask != 0).to(torch.uint8)
    lead = fg.shape[:-2]
    if kind == "flat":
        flat = fg.reshape(*lead, -1)
        flat = F.pad(flat, (0, -flat.shape[-1] % a))  # zero (background) pixels past the end
        return flat.reshape(*lead, -1, a).amax(dim=-1).bool()
    h, w = fg.shape[-2:]
    fg = F.pad(fg, (0, -w % b, 0, -h % a))  # zero (background) cells past the border
    tiles = fg.reshape(*lead, fg.shape[-2] // a, a, fg.shape[-1] // b, b).amax(dim=(-3, -1))
    return tiles.reshape(*lead, -1).bool()


def skippable_fraction(mask: torch.Tensor, tile: str) -> torch.Tensor:
    """Fraction of the tiles of each (..., H, W) map that hold no foreground at all."""
    return 1.0 - tile_any(mask, tile).float().mean(dim=-1)


def fixed256(mask: np.ndarray) -> torch.Tensor:
    """(H, W) mask in [0, 1] -> (1, 1, 256, 256), bilinear without antialiasing."""
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if t.shape[-2:] == (IMAGE, IMAGE):
        return t
    return F.interpolate(t, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


def _decode(data: bytes, name: str) -> np.ndarray:
    """A mask as every reader of the engine sees it (giftnet.pipeline.images.read_mask), from its bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        try:
            return read_mask(path)
        except DataError as exc:
            raise DataError(f"{name}: not a readable mask image ({exc})") from None


def iter_masks(source: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, mask in [0, 1]) for every mask image in a folder or a .zip, in name order."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such mask folder or zip")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in MASK_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no mask images ({', '.join(MASK_SUFFIXES)}) in this folder")
        for f in files:
            check_regular_file(f, "mask")
            yield f.name, _decode(f.read_bytes(), str(f))
        return
    check_regular_file(path, "mask archive")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: neither a folder nor a zip archive of masks")
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if Path(n).suffix.lower() in MASK_SUFFIXES)
        if not names:
            raise DataError(f"{path}: the archive holds no mask images")
        for n in names:
            yield n, _decode(zf.read(n), f"{path}:{n}")


def mask_statistics(
    masks: Iterator[tuple[str, np.ndarray]],
    sides: Sequence[int],
    tiles: tuple[str, ...] = TILES,
    chunk: int = 64,
) -> dict:
    """Per map side: per-image foreground mean, touched-cell fraction and skippable tile fractions.

    Returns {"count": n, "sides": {side: {"fg": array, "touched": array, "skip": {tile: array}}}},
    one entry per image in each array. Masks are measured `chunk` at a time.
    """
    fg: dict[int, list[torch.Tensor]] = {s: [] for s in sides}
    touched: dict[int, list[torch.Tensor]] = {s: [] for s in sides}
    skip: dict[int, dict[str, list[torch.Tensor]]] = {s: {t: [] for t in tiles} for s in sides}
    batch: list[torch.Tensor] = []

    def flush() -> None:
        m256 = torch.cat(batch)
        batch.clear()
        for side in sides:
            m = resize_mask(m256, (side, side))[:, 0]
            fg[side].append(m.mean(dim=(-2, -1)))
            touched[side].append((m != 0).float().mean(dim=(-2, -1)))
            for t in tiles:
                skip[side][t].append(skippable_fraction(m, t))

    for _, mask in masks:
        batch.append(fixed256(mask))
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    if not fg[sides[0]]:
        raise DataError("no masks to measure")

    def cat(parts: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(parts).double().numpy()

    arr = {
        s: {"fg": cat(fg[s]), "touched": cat(touched[s]), "skip": {t: cat(v) for t, v in skip[s].items()}}
        for s in sides
    }  # fmt: skip
    return {"count": sum(len(part) for part in fg[sides[0]]), "sides": arr}
