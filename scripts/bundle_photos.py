"""Make pipeline/data/lalonde_efros: the real photos the built-in dataset is synthesized from.

    python scripts/bundle_photos.py --source PHOTOS [--count 300] [--size 160]

PHOTOS is the Lalonde-Efros folder of the iHarmony4 repository (images/NAME.jpg + masks/NAME.png,
256x256). Every photo the real-photo recipe holds out for validation (giftnet.pipeline.builders.synth_sources's
split of that folder) is skipped, so a model trained on the built-in data never saw a recipe
validation photo; of the rest, `--count` are taken at even steps in name order, downscaled to
`--size` px (JPEG quality 85, 4:2:0) with their masks (1-bit PNG, nearest). Deterministic.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

from giftnet.pipeline.builders.synth_sources import folder_photos, split_photos

OUT = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "lalonde_efros"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    train = sorted(ph.group for ph in split_photos(folder_photos(args.source))["train"])
    step = len(train) / args.count
    chosen = [train[int(i * step)] for i in range(args.count)]
    for sub in ("images", "masks"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
        (args.out / sub).mkdir(parents=True)
    for name in chosen:
        # renamed le_N: the hash split of the built-in data then holds out about one photo in five
        # (under their own names these photos are exactly the ones the same hash keeps for training)
        new = name.replace("image_", "le_")
        image = Image.open(args.source / "images" / f"{name}.jpg").convert("RGB")
        image.resize((args.size, args.size), Image.LANCZOS).save(
            args.out / "images" / f"{new}.jpg", quality=85, subsampling=2, optimize=True
        )
        mask = Image.open(args.source / "masks" / f"{name}.png").convert("L")
        mask.resize((args.size, args.size), Image.NEAREST).point(lambda v: 255 if v > 127 else 0).convert("1").save(
            args.out / "masks" / f"{new}.png", optimize=True
        )
    print(f"{args.out}: {len(chosen)} photos of {len(train)} training photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
