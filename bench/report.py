"""Benchmark results at a glance: bench/results/results.csv -> bench/results/README.md with tables and PNG plots.

The CSV is long-format (machine, git, date, benchmark, config, metric, value, note): every
benchmark appends its figures with `--csv`, or its JSON output is added here with
`--add train=OUT.json` (also data=, kernels=). The README shows, for the newest run of each
benchmark on each machine, the training throughput per configuration (bars), the data pipeline,
the kernels (table and a roofline on the GPU they ran on, with the RTX 3090's roof drawn from
its specification) and the static resources of every Triton kernel on sm_86 from the
ahead-of-time compile (`--aot` recompiles them into bench/results/aot.json; no GPU needed).

    python -m giftnet.bench.report [--results bench/results/results.csv] [--out DIR] [--add KIND=JSON] [--aot]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from giftnet.bench.common import REPO, RESULTS_CSV, append_results, csv_records, read_results
from giftnet.bench.report_plots import roofline_png, throughput_png

AOT_JSON = "aot.json"
DATA_METRICS = ("pairs_per_s", "vs_torch")
GPU_CHECK_DOC = """## Running the GPU check

On a machine with a CUDA GPU (nothing is installed over the network; the repository need not be
pip-installed), from the repository root:

```bash
bash bench/gpu_check.sh --dry-run /tmp/gpu-out  # the plan: every step's command and time limit
bash bench/gpu_check.sh /tmp/gpu-out            # PYTHON=/path/to/python to choose the interpreter
```

Steps, fastest evidence first, each under its own limit and all within
`GIFTNET_GPU_CHECK_BUDGET_S` (400 s by default, so a rerun fits a 15-minute window): smoke (the
Triton kernels against their references at the GiftNet shapes), the modconv and relation kernel
benchmarks (each row appended as it is measured), training throughput (configs a-c, then a and e
with torch.compile), the CUDA tests (xdist, a junit report) and this report. `--steps a,b` reruns
only some. The output folder receives two files: `gpu_check.log` and `gpu_check.tar.gz` (env.txt,
a log per step, every benchmark's JSON, results.csv with the new rows, the junit XML, the
regenerated report), rebuilt after every step so that a run cut short still returns what it
measured. It exits 1 only when a correctness step fails. To publish: unpack the archive, copy its
`results.csv` over `bench/results/results.csv` and run `python -m giftnet.bench.report`.
"""


def add_json(kind: str, path: Path, results: Path) -> None:
    """Append the rows of a benchmark's --json output to the results CSV."""
    rows = json.loads(Path(path).read_text())
    if kind == "train":
        from giftnet.bench.train import record_csv
    elif kind == "kernels":
        from giftnet.bench.kernels import record_csv
    elif kind == "data":

        def record_csv(rows: list[dict], path: Path) -> None:
            for row in rows:
                row["size"] = f"b{row.get('batch_size')} {row.get('crop_size')}px"
            append_results(csv_records("data", rows, ("backend", "size"), DATA_METRICS), path)
    else:
        raise ValueError(f"--add {kind}=...: kind must be train, kernels or data")
    record_csv(rows, results)


def pivot(records: list[dict]) -> dict[tuple, dict[str, dict]]:
    """{(machine, git, date, benchmark): {config: {metric: value or note}}} in file order."""
    runs: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        key = (r["machine"], r["git"], r["date"], r["benchmark"])
        figures = runs[key].setdefault(r["config"], {})
        if r["metric"] in ("skipped", "error"):
            figures[r["metric"]] = r["note"]
            continue
        figures[r["metric"]] = float(r["value"])
        if r["note"]:
            figures["note"] = r["note"]
    return runs


def latest(runs: dict[tuple, dict], benchmark: str) -> list[tuple[tuple, dict]]:
    """The newest run of `benchmark` on each machine, machines in name order."""
    best: dict[str, tuple] = {}
    for key in runs:
        if key[3] == benchmark and (key[0] not in best or key[2] >= best[key[0]][2]):
            best[key[0]] = key
    return [(best[m], runs[best[m]]) for m in sorted(best)]


def _v(fig: dict, metric: str, spec: str, scale: float = 1.0) -> str:
    value = fig.get(metric)
    return "-" if value is None else format(value * scale, spec)


def _title(key: tuple) -> str:
    return f"**{key[0]}**, git `{key[1]}`, {key[2]}"


def train_section(runs: dict) -> list[str]:
    try:
        from giftnet.bench.train import CONFIGS

        labels = {letter: spec["label"] for letter, spec in CONFIGS.items()}
    except ImportError:  # the trainer's dependencies are missing here: tables without labels
        labels = {}

    out = ["## Training throughput (`python -m giftnet.bench.train`)", ""]
    out += [
        "Full harmonization-stage steps (teacher forward, student forward + backward, relation distillation,",
        "Adam), data loading inside the clock. MFU: achieved model FLOP/s (counted) over the GPU's dense bf16 peak.",
        "",
    ]
    found = latest(runs, "train")
    if not found:
        return [*out, "No training results yet.", ""]
    out += ["![training throughput](train_throughput.png)", ""]
    for key, configs in found:
        size = next(iter(configs)).partition(" ")[2]
        out += [f"{_title(key)}: {size} (batch, crop, base channels)", ""]
        out += [
            "| config | what | images/s | vs a | ms/step | peak MB | GFLOP/img | MFU |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, fig in configs.items():
            letter = name.split()[0]
            label = labels.get(letter, "")
            if "images_per_s" not in fig:
                why = fig.get("skipped") or fig.get("error") or "no result"
                out.append(f"| {letter} | {label} | {'skipped' if 'skipped' in fig else 'FAILED'}: {why} ||||||")
                continue
            out.append(
                f"| {letter} | {label} | {_v(fig, 'images_per_s', '.1f')} | {_v(fig, 'vs_a', '.2f')} | "
                f"{_v(fig, 'ms_per_step', '.1f')} | {_v(fig, 'peak_mem_mb', '.0f')} | "
                f"{_v(fig, 'gflop_per_image', '.3f')} | {_v(fig, 'mfu', '.1%')} |"
            )
        ips = {name.split()[0]: f.get("images_per_s") for name, f in configs.items()}
        if not key[0].endswith("(CPU only)") and all(ips.get(k) for k in "abcd"):
            out += [
                "",
                f"Goal (issue 7): d/a = {ips['d'] / ips['a']:.2f} (>= 2), c/b = {ips['c'] / ips['b']:.2f} (>= 1.3).",
            ]
        notes = sorted({f.get("note") for f in configs.values() if f.get("note")})
        out += ["", *(f"Note: {n}" for n in notes), ""]
    return out


def data_section(runs: dict) -> list[str]:
    out = ["## Data pipeline (`python -m giftnet.bench.data`)", ""]
    found = latest(runs, "data")
    if not found:
        return [*out, "No data-pipeline results yet.", ""]
    train = dict((k[0], c) for k, c in latest(runs, "train"))
    for key, configs in found:
        out += [_title(key), "", "| backend | pairs/s | vs torch |", "|---|---:|---:|"]
        for name, fig in configs.items():
            if "pairs_per_s" not in fig:
                out.append(f"| {name} | skipped: {fig.get('skipped') or fig.get('error')} | |")
                continue
            out.append(f"| {name} | {_v(fig, 'pairs_per_s', '.1f')} | {_v(fig, 'vs_torch', '.2f')} |")
        dali_name, dali = next(
            ((n, f) for n, f in configs.items() if n.startswith("dali ") and "pairs_per_s" in f), ("", None)
        )
        size = dali_name.partition(" ")[2]  # "b16 256px": compare with a training run of the same batch and crop
        engine = next(
            (f for n, f in train.get(key[0], {}).items() if n.startswith(f"d {size} ") and "images_per_s" in f), None
        )
        if engine and dali:
            ratio = dali["pairs_per_s"] / engine["images_per_s"]
            out.append(f"\nDALI delivers {ratio:.2f}x the engine's training rate (goal >= 1.5x).")
        out.append("")
    return out


def kernels_section(runs: dict, out_dir: Path) -> list[str]:
    out = ["## Kernels (`python -m giftnet.bench.kernels`)", ""]
    found = [(k, c) for b in ("kernels_modconv", "kernels_relation") for k, c in latest(runs, b)]
    gpu = [(k, c) for k, c in found if not k[0].endswith("(CPU only)")]
    note = roofline_png(gpu, out_dir / "kernels_roofline.png")
    out += ["![kernel roofline](kernels_roofline.png)", "", note, ""]
    if not found:
        return [*out, "No kernel results yet.", ""]
    for key, configs in found:
        out += [f"{_title(key)} ({key[3]}, fwd+bwd)", ""]
        out += ["| where | impl | mode | dtype | ms | TFLOP/s | GB/s | of peak | vs eager | vs compile |"]
        out.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
        skipped: dict[str, set] = defaultdict(set)
        for name, fig in configs.items():
            if " fwd+bwd " not in f" {name} ":
                continue
            if "ms" not in fig:
                skipped[fig.get("skipped") or fig.get("error") or "no result"].add(name.split()[1])
                continue
            where = " | ".join(name.split(maxsplit=3))  # "E1 triton fwd+bwd float32": one column each
            out.append(
                f"| {where} | {_v(fig, 'ms', '.3f')} | {_v(fig, 'tflops', '.3g')} | {_v(fig, 'gbps', '.4g')} | "
                f"{_v(fig, 'peak_fraction', '.0%')} | {_v(fig, 'vs_eager', '.2f')} | {_v(fig, 'vs_compile', '.2f')} |"
            )
        out += ["", *(f"Skipped {', '.join(sorted(impls))}: {why}" for why, impls in skipped.items())]
        out.append("")
    return out


def run_aot(out: Path) -> None:
    """`python -m giftnet.kernels.aot --json out` in a subprocess without TRITON_INTERPRET (the interpreter
    replaces the JIT functions, so the compile must not see it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "giftnet.kernels.aot", "--json", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if not out.is_file():
        raise RuntimeError(f"python -m giftnet.kernels.aot failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def aot_section(aot_json: Path) -> list[str]:
    out = ["## Static resources on sm_86 (RTX 3090), from the ahead-of-time compile", ""]
    if not aot_json.is_file():
        return [*out, f"No `{aot_json.name}` yet: run `python -m giftnet.bench.report --aot`.", ""]
    records = [r for r in json.loads(aot_json.read_text()) if r["arch"] == 86]
    out += [
        "Every launch the kernels may make (`python -m giftnet.kernels.aot`, no GPU needed). Stack or local bytes mean",
        "register spills; a block may use at most 99 KB of shared memory on sm_86. Regenerated by",
        f"`python -m giftnet.bench.report --aot` ({len(records)} launches).",
        "",
        "| kernel | warps | stages | tile | registers | spills (stack/local B) | shared (B) | ok |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in records:
        tile = " ".join(f"{k}={v}" for k, v in r.get("constexprs", {}).items() if k.isupper())
        out.append(
            f"| {r['name']} | {r.get('num_warps', '')} | {r.get('num_stages', '')} | {tile} | {r['registers']} | "
            f"{r['stack']}/{r['local']} | {r['shared']} | {'yes' if r['ok'] else '**NO**'} |"
        )
    return [*out, ""]


def write_report(results: Path, out_dir: Path, aot_json: Path | None = None) -> Path:
    """Write out_dir/README.md (and its PNGs) from the results CSV; returns the README's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = pivot(read_results(results))
    lines = ["# Benchmark results", ""]
    lines += [
        f"Generated by `python -m giftnet.bench.report` from `{results.name}` (one line per figure: machine, git",
        "revision, date, benchmark, config, metric, value). The newest run on each machine is shown. CPU rows",
        "come from tiny CI-sized runs that only check the harness; the figures that matter are the GPU ones.",
        "",
    ]
    if not any(not key[0].endswith("(CPU only)") for key in runs):
        lines += [
            "**No GPU figures yet**: no GPU was available when these results were produced. Run",
            "`bash bench/gpu_check.sh OUT` on a GPU machine (see the last section) and commit its results.",
            "",
        ]
    throughput_png(latest(runs, "train"), out_dir / "train_throughput.png")
    lines += train_section(runs) + data_section(runs) + kernels_section(runs, out_dir)
    lines += aot_section(aot_json or out_dir / AOT_JSON) + GPU_CHECK_DOC.splitlines()
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines).rstrip() + "\n")
    return readme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m giftnet.bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS_CSV, help="the results CSV (appended to by --add)")
    ap.add_argument("--out", type=Path, help="folder for README.md and the PNGs (default: the CSV's folder)")
    ap.add_argument("--add", action="append", default=[], metavar="KIND=JSON", help="append a bench's --json output")
    ap.add_argument("--aot", action="store_true", help="recompile the Triton kernels for sm_86/sm_90 (aot.json)")
    ap.add_argument("--aot-json", type=Path, help="static resources JSON to show (default OUT/aot.json)")
    args = ap.parse_args(argv)
    out_dir = args.out or args.results.parent
    try:
        for item in args.add:
            kind, _, path = item.partition("=")
            add_json(kind, Path(path), args.results)
        if args.aot:
            run_aot(args.aot_json or out_dir / AOT_JSON)
        readme = write_report(args.results, out_dir, args.aot_json)
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
