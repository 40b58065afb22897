"""Train GiftNet on real photographs with object masks: build the composites, train, score per kind.

    python scripts/realphoto.py --photos PHOTOS --out runs/realphoto [--config configs/realphoto.json]

PHOTOS holds images/NAME.jpg + masks/NAME.png (your own photos, or the Lalonde-Efros photos of the
iHarmony4 repository). The command is resumable: run it again with the same arguments and it
reuses the built dataset and continues the training run where it stopped (train.py --resume).

1. `giftnet.pipeline.builders.synth` makes composites of both kinds the paper uses from the photos: colour-statistics
   transfer between objects (iHarmony4 style: Lab statistics, histogram matching, tone changes) and
   illumination transfer through released ccHarmony camera matrices (ccHarmony style). One photo
   in five (by a hash of its name) is held out: those photos give the validation split (the
   dataset's `test` list), and none of their pixels is seen in training.
2. `train.py` with the config file's "train" fields (every field of TrainConfig may appear).
   Nothing is selected on the validation split: the last weights are the result, and the
   run evaluates once, at its end.
3. The exported model is scored on the validation split by composite kind (MSE, fMSE, PSNR, fSSIM,
   Fixed256, with the composite baseline): OUT/metrics.json and a printed table.

The config file: {"data": {"n_train", "n_val", "size", "seed"}, "train": {TrainConfig fields},
"eval": {"size", "batch_size"}}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from giftnet.allocator import configure_allocator  # noqa: E402
from giftnet.errors import UsageError, UserError  # noqa: E402
from giftnet.fileio import atomic_write_text  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "realphoto.json"
KIND_NAMES = {"lab_transfer": "iHarmony4-style", "histogram": "iHarmony4-style", "tone": "iHarmony4-style",
              "illumination": "ccHarmony-style"}  # fmt: skip


def read_recipe(path: Path) -> dict:
    """The recipe config file, checked for its three sections."""
    try:
        recipe = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--config {path}: cannot read JSON ({exc})") from None
    if not isinstance(recipe, dict) or not {"data", "train"} <= set(recipe):
        raise UsageError(f"--config {path}: must hold an object with 'data' and 'train' sections")
    return recipe


def build_data(photos: Path, out: Path, spec: dict) -> Path:
    from giftnet.pipeline.builders.synth import build_demo_dataset

    return build_demo_dataset(
        out / "data", n_train=spec["n_train"], n_test=spec["n_val"], size=spec["size"], seed=spec.get("seed", 0),
        source=photos,
    )  # fmt: skip


def train(data: Path, run: Path, fields: dict, extra: list[str]) -> None:
    """train.py on the built data; continues the run when it has started before."""
    cmd = [sys.executable, str(ROOT / "train.py")]
    if (run / "config.json").is_file():
        cmd += ["--resume", str(run)]
    else:
        config = run.parent / "train-config.json"
        atomic_write_text(config, json.dumps(fields | {"data": str(data), "out": str(run)}, indent=2) + "\n")
        cmd += ["--config", str(config)]
    rc = subprocess.run(cmd + extra).returncode
    if rc != 0:
        raise SystemExit(rc)


def kinds(data: Path) -> dict[str, str]:
    """Composite file stem -> composite kind (iHarmony4-style or ccHarmony-style), from pairs.csv."""
    from giftnet.pipeline.builders.synth import SUBSET

    out = {}
    for row in (data / SUBSET / "pairs.csv").read_text().splitlines()[1:]:
        name, _split, _photo, _mask, change, _fmse = row.split(",")
        out[Path(name).stem] = KIND_NAMES[change.split()[0]]
    return out


def score(data: Path, weights: Path, spec: dict) -> dict:
    """Validation metrics by composite kind and All, for the composites and the model."""
    from giftnet.evaluate import evaluate
    from giftnet.pipeline.ihd import read_pairs
    from giftnet.weights import load_weights

    by_kind = kinds(data)
    pairs = [dataclasses.replace(p, subset=by_kind[p.name]) for p in read_pairs(data, None, "test")]
    model = load_weights(weights, "cpu")
    return evaluate(
        model, pairs, batch_size=spec.get("batch_size", 8), size=spec.get("size", 256), device="cpu",
        backend="torch", num_workers=0, progress=False,
    )  # fmt: skip


def print_table(results: dict) -> None:
    print(f"{'kind':18} {'input':9} {'MSE':>8} {'fMSE':>8} {'PSNR':>7} {'fSSIM':>7} {'n':>5} {'fMSE ratio':>10}")
    for kind in results["composite"]:
        base = results["composite"][kind]["fmse"]
        for name in ("composite", "model"):
            r = results[name][kind]
            ratio = f"{r['fmse'] / base:.3f}x" if name == "model" else ""
            print(
                f"{kind:18} {name:9} {r['mse']:8.2f} {r['fmse']:8.2f} {r['psnr']:7.2f} {r['fssim']:7.4f} {r['n']:5d} {ratio:>10}"
            )


def main(argv: list[str] | None = None) -> int:
    configure_allocator()
    p = argparse.ArgumentParser(prog="scripts/realphoto.py", description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, required=True, help="folder with images/NAME.jpg and masks/NAME.png")
    p.add_argument("--out", type=Path, required=True, help="recipe folder: data/, run/, metrics.json")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="recipe config (default configs/realphoto.json)")
    p.add_argument("train_args", nargs="*", help="after --: extra train.py flags (e.g. -- --ablation 1)")
    args = p.parse_args(argv)
    try:
        if not args.photos.is_dir():
            raise UsageError(f"--photos {args.photos}: no such folder")
        recipe = read_recipe(args.config)
        args.out.mkdir(parents=True, exist_ok=True)
        data = build_data(args.photos, args.out, recipe["data"])
        run = args.out / "run"
        train(data, run, recipe["train"], args.train_args)
        results = score(data, run / "model.safetensors", recipe.get("eval", {}))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(args.out / "metrics.json", json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
