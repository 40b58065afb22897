"""The paper's Table 3 at small scale: rows of the ablation trained by the real-photo recipe, per seed.

    python scripts/table3.py --photos PHOTOS --out runs/table3 [--rows 1 2 8] [--seeds 0 1] [--markdown FILE]

Every run is the recipe of `scripts/realphoto.py` (configs/realphoto.json: the same composites,
built once in OUT/data, and the same budget; nothing is tuned per row) with `--ablation ROW --seed
SEED`, in OUT/rowROW-seedSEED. Runs resume, and a run whose metrics.json exists is not run again,
so the command can be continued across sittings. `--reuse ROW SEED WEIGHTS` scores weights that
the same recipe already produced (e.g. the shipped model, row 8 seed 0) instead of training them
again; the table says so.

The table: the validation split's MSE, fMSE, PSNR and fSSIM (Fixed256) of the composites and of
each row (mean over seeds, with each seed's fMSE ratio), and whether the paper's ordering (row 8
better than row 2 better than row 1) holds here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import realphoto  # noqa: E402

from giftnet.allocator import configure_allocator  # noqa: E402
from giftnet.errors import UsageError, UserError  # noqa: E402
from giftnet.fileio import atomic_write_text  # noqa: E402

ALL = "all"  # giftnet.evaluate's key for the mean over every image
METRICS = ("mse", "fmse", "psnr", "fssim")
LABELS = {"mse": "MSE", "fmse": "fMSE", "psnr": "PSNR", "fssim": "fSSIM"}
PAPER_ORDER = (8, 2, 1)  # best first: the full model, GIFT at D3, the plain backbone


def run_one(photos: Path, out: Path, recipe: dict, row: int, seed: int, reuse: Path | None) -> tuple[dict, bool]:
    """Train (or resume) one row and seed and score it: the scored metrics (also kept in
    metrics.json) and whether this call trained it."""
    folder = out / f"row{row}-seed{seed}"
    done = folder / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text()), False
    data = realphoto.build_data(photos, out, recipe["data"])
    folder.mkdir(parents=True, exist_ok=True)
    if reuse is None:
        realphoto.train(data, folder / "run", recipe["train"], ["--ablation", str(row), "--seed", str(seed)])
        weights, source = folder / "run" / "model.safetensors", "trained here"
    else:
        if not reuse.is_file():
            raise UsageError(f"--reuse {row} {seed} {reuse}: no such file")
        weights, source = reuse, f"reused: {reuse.name}"
    results = realphoto.score(data, weights, recipe.get("eval", {})) | {"source": source}
    atomic_write_text(done, json.dumps(results, indent=2) + "\n")
    return results, reuse is None


def parse_reuse(items: list[list[str]]) -> dict[tuple[int, int], Path]:
    """--reuse ROW SEED WEIGHTS triples as {(row, seed): path}."""
    out = {}
    for row, seed, weights in items:
        if not (row.isdigit() and seed.isdigit()):
            raise UsageError(f"--reuse {row} {seed} {weights}: ROW and SEED must be whole numbers")
        out[int(row), int(seed)] = Path(weights)
    return out


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarize(runs: dict[tuple[int, int], dict]) -> dict:
    """Per row: the mean over seeds of each metric on All, and each seed's fMSE ratio per kind."""
    first = next(iter(runs.values()))
    composite = first["composite"]
    rows: dict[int, dict] = {}
    for (row, seed), res in sorted(runs.items()):
        entry = rows.setdefault(row, {"seeds": [], "all": {m: [] for m in METRICS}, "ratio": {}, "sources": []})
        entry["seeds"].append(seed)
        entry["sources"].append(res.get("source", "trained here"))
        for m in METRICS:
            entry["all"][m].append(res["model"][ALL][m])
        for kind in composite:
            entry["ratio"].setdefault(kind, []).append(res["model"][kind]["fmse"] / composite[kind]["fmse"])
    for entry in rows.values():
        entry["mean"] = {m: mean(v) for m, v in entry["all"].items()}
    return {"composite": composite, "rows": rows}


def ordering(summary: dict) -> list[str]:
    """Plain sentences on whether the paper's ordering holds, per metric, from the means."""
    rows = summary["rows"]
    present = [r for r in PAPER_ORDER if r in rows]
    if len(present) < 2:
        return ["Fewer than two of rows 8, 2 and 1 were run: no ordering to compare."]
    lines = []
    for m in METRICS:
        higher_better = m in ("psnr", "fssim")
        vals = [rows[r]["mean"][m] for r in present]
        holds = all((a > b) if higher_better else (a < b) for a, b in itertools.pairwise(vals))
        ranked = sorted(present, key=lambda r: rows[r]["mean"][m], reverse=higher_better)
        order = " > ".join(f"row {r}" for r in ranked)
        verdict = "holds" if holds else "does not hold"
        lines.append(f"- {LABELS[m]}: best to worst {order}; the paper's order {verdict}.")
    return lines


def cell(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "fssim" else f"{value:.2f}"


def markdown(summary: dict, recipe_path: Path, elapsed: dict) -> str:
    from giftnet.ablations import ablation

    comp = summary["composite"]
    kinds = list(comp)
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    head = [
        "# Table 3 at small scale (`python scripts/table3.py`)",
        "",
        f"Recipe `{recipe_path.name}` for every row and seed; validation split (held-out photos), Fixed256.",
        f"Machine: {platform.processor() or platform.machine()}, no GPU. Git `{git.stdout.strip()}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| row | model | seeds | MSE | fMSE | PSNR | fSSIM | " + " | ".join(f"fMSE ratio {k}" for k in kinds) + " |",
        "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(kinds),
        "| - | composite | - | "
        + " | ".join(cell(m, comp[ALL][m]) for m in METRICS)
        + " | "
        + " | ".join("1x" for _ in kinds)
        + " |",
    ]
    for row, e in sorted(summary["rows"].items()):
        seeds = ", ".join(str(s) for s in e["seeds"])
        cells = [cell(m, e["mean"][m]) for m in METRICS]
        ratios = [" / ".join(f"{r:.3f}x" for r in e["ratio"][k]) for k in kinds]
        head.append(f"| {row} | {ablation(row).description} | {seeds} | " + " | ".join(cells + ratios) + " |")
    notes = ["", "Metrics are means over the seeds; ratios are per seed, in the order of the seeds column.", ""]
    for row, e in sorted(summary["rows"].items()):
        for seed, source in zip(e["seeds"], e["sources"], strict=True):
            if source != "trained here":
                notes.append(f"- Row {row} seed {seed}: {source} (weights of the same recipe, scored here).")
    for (row, seed), seconds in sorted(elapsed.items()):
        notes.append(f"- Row {row} seed {seed}: trained and scored in {seconds / 60:.1f} min in this invocation.")
    return "\n".join(head + notes + ["", "## Ordering", "", *ordering(summary), ""])


def main(argv: list[str] | None = None) -> int:
    configure_allocator()
    p = argparse.ArgumentParser(prog="scripts/table3.py", description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, required=True, help="folder with images/NAME.jpg and masks/NAME.png")
    p.add_argument("--out", type=Path, required=True, help="folder of the runs: data/, rowR-seedS/")
    p.add_argument(
        "--config", type=Path, default=realphoto.DEFAULT_CONFIG, help="recipe (default configs/realphoto.json)"
    )
    p.add_argument("--rows", type=int, nargs="+", default=[1, 2, 8], help="Table 3 rows (default 1 2 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    p.add_argument("--reuse", nargs=3, action="append", default=[], metavar=("ROW", "SEED", "WEIGHTS"),
                   help="score these weights (made by the same recipe) as that row and seed")  # fmt: skip
    p.add_argument("--markdown", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    try:
        from giftnet.ablations import ablation

        for row in args.rows:
            ablation(row)
        if not args.photos.is_dir():
            raise UsageError(f"--photos {args.photos}: no such folder")
        reuse = parse_reuse(args.reuse)
        recipe = realphoto.read_recipe(args.config)
        runs, elapsed = {}, {}
        for seed in args.seeds:
            for row in args.rows:
                start = time.monotonic()
                runs[row, seed], trained = run_one(args.photos, args.out, recipe, row, seed, reuse.get((row, seed)))
                if trained:
                    elapsed[row, seed] = time.monotonic() - start
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(summarize(runs), args.config, elapsed)
    if args.markdown:
        atomic_write_text(args.markdown, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
