"""docs/gallery.png: real cut-and-paste composites beside what the shipped model makes of them.

    python scripts/gallery.py --composites COMPOSITES [--weights W] [--count 12] [--out docs/gallery.png]

COMPOSITES holds images/NAME.jpg + masks/NAME.png (the 200 real composites of the Lalonde-Efros
set). `--count` of them are taken at even steps in name order (no picking), harmonised by
`python -m giftnet.harmonize` (the shipped weights unless --weights), and tiled as rows of
composite | harmonised | mask outline, two pairs per row.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from giftnet import harmonize  # noqa: E402
from giftnet.fileio import atomic_writer  # noqa: E402

TILE = 192
GAP = 6


def _fit(image: Image.Image, resample: int) -> Image.Image:
    """`image` scaled to fit TILE x TILE, aspect kept."""
    scale = TILE / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def _outline(mask: Image.Image) -> np.ndarray:
    m = np.asarray(_fit(mask.convert("L"), Image.NEAREST)) > 127
    return m ^ np.roll(m, 1, 0) | m ^ np.roll(m, 1, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--composites", type=Path, required=True)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery.png")
    args = p.parse_args(argv)
    names = sorted(f.stem for f in (args.composites / "images").glob("*.jpg"))
    step = len(names) / args.count
    chosen = [names[int(i * step)] for i in range(args.count)]
    with tempfile.TemporaryDirectory() as tmp:
        src, masks, out = Path(tmp) / "images", Path(tmp) / "masks", Path(tmp) / "out"
        src.mkdir(), masks.mkdir()
        for n in chosen:
            shutil.copy(args.composites / "images" / f"{n}.jpg", src)
            shutil.copy(args.composites / "masks" / f"{n}.png", masks)
        cmd = ["--image", str(src), "--mask", str(masks), "--out", str(out), "--device", "cpu"]
        if args.weights is not None:
            cmd += ["--weights", str(args.weights)]
        if harmonize.main(cmd) != 0:
            return 1
        cols = 2
        rows = -(-len(chosen) // cols)
        sheet = Image.new("RGB", (cols * (2 * TILE + GAP) + (cols - 1) * 3 * GAP, rows * (TILE + GAP)), "white")
        for i, n in enumerate(chosen):
            comp = _fit(Image.open(src / f"{n}.jpg").convert("RGB"), Image.LANCZOS)
            ours = _fit(Image.open(out / f"{n}.png").convert("RGB"), Image.LANCZOS)
            edge = _outline(Image.open(masks / f"{n}.png"))
            comp_a = np.asarray(comp).copy()
            comp_a[edge] = (255, 255, 0)  # the mask's outline on the composite only
            x = (i % cols) * (2 * TILE + GAP + 3 * GAP)
            y = (i // cols) * (TILE + GAP)
            dx, dy = (TILE - comp.width) // 2, (TILE - comp.height) // 2
            sheet.paste(Image.fromarray(comp_a), (x + dx, y + dy))
            sheet.paste(ours, (x + TILE + GAP + dx, y + dy))
            ImageDraw.Draw(sheet).text((x + 3, y + 2), n, fill=(255, 255, 255))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(args.out) as f:
            sheet.save(f, format="PNG", optimize=True)
    print(f"{args.out}: {len(chosen)} composites (left: composite with mask outline, right: harmonised)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
