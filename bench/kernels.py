"""Both kernel benchmarks under one command: masked modulated convolution and relation distillation.

Runs `giftnet.bench.kernels_modconv.run` and `giftnet.bench.kernels_relation.run` (each imported only when it
runs; one that is missing or fails is reported and the other still runs) and prints one table:
per site or level and implementation, the median milliseconds, TFLOP/s (modconv), effective GB/s
and its fraction of the GPU's peak bandwidth, and the speed-up over eager and torch.compile.

    python -m giftnet.bench.kernels [--tiny] [--json OUT] [--csv results.csv] [--only modconv|relation]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

from giftnet.bench.common import append_results, csv_records, peaks, row_machine
from giftnet.fileio import atomic_write_text

BENCHES = {"modconv": "giftnet.bench.kernels_modconv", "relation": "giftnet.bench.kernels_relation"}
METRICS = ("ms", "tflops", "gbps", "peak_fraction", "vs_eager", "vs_compile")


def normalise(bench: str, row: dict) -> dict:
    """One row of either benchmark in common terms: where, impl, mode, and the shared figures."""
    out = dict(row)
    out["bench"] = bench
    out["where"] = row.get("site") or row.get("level") or "?"
    out["mode"] = row.get("mode", "fwd+bwd")
    out["vs_eager"] = row.get("vs_best_eager", row.get("vs_eager"))
    out["machine"] = row_machine(row)
    peak = peaks(out["machine"])
    frac = row.get("peak_fraction")
    if not isinstance(frac, float) and peak and isinstance(row.get("gbps"), (int, float)):
        frac = round(row["gbps"] / peak["gbps"], 3)
    out["peak_fraction"] = frac if isinstance(frac, float) else None
    return out


def run(tiny: bool, only: tuple[str, ...] = tuple(BENCHES), on_rows=None) -> list[dict]:
    """Rows of every benchmark in `only`; a benchmark that cannot run gives one row with "error".

    on_rows(rows): called with each site's or level's normalised rows as soon as they are measured.
    """
    rows: list[dict] = []
    for bench in only:

        def measured(got: list[dict], bench=bench) -> None:
            new = [normalise(bench, r) for r in got]
            rows.extend(new)
            if on_rows is not None:
                on_rows(new)

        try:
            module = importlib.import_module(BENCHES[bench])
            module.run(tiny, on_row=measured)
        except Exception as err:  # report it and carry on with the other benchmark
            traceback.print_exception(err, file=sys.stderr)
            rows.append({"bench": bench, "error": f"{BENCHES[bench]}: {type(err).__name__}: {err}"[:300]})
            continue
    return rows


def record_csv(rows: list[dict], path: Path) -> None:
    """Append the figures to a results CSV: benchmark kernels_<bench>, config "where impl mode dtype"."""
    for bench in BENCHES:
        mine = [r for r in rows if r.get("bench") == bench and not r.get("error")]
        keys = ("where", "impl", "mode", "dtype")
        if mine:
            append_results(csv_records(f"kernels_{bench}", mine, keys, METRICS), path)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print(rows: list[dict]) -> None:
    ok = [r for r in rows if not r.get("error")]
    if ok:
        first = ok[0]
        print(f"kernel benchmarks on {first['machine']} (git {first.get('git')}, {first.get('date')})")
    head = f"{'bench':9}{'where':6}{'shape':22}{'impl':10}{'mode':8}{'ms':>9}{'TFLOP/s':>9}{'GB/s':>8}"
    print(head + f"{'of peak':>8}{'vs eager':>9}{'vs comp.':>9}")
    skipped: dict[tuple[str, str], str] = {}
    for r in ok:
        if r.get("ms") is None:
            skipped[r["bench"], r["impl"]] = r.get("skipped", "")
            continue
        shape = f"{r['batch']}x{r['channels']}x{r['side']}^2 {r['dtype']}"
        print(
            f"{r['bench']:9}{r['where']:6}{shape:22}{r['impl']:10}{r['mode']:8}{r['ms']:9.3f}"
            f"{_fmt(r.get('tflops'), '9.3g')}{_fmt(r.get('gbps'), '8.4g')}"
            f"{_fmt(r.get('peak_fraction'), '8.0%')}{_fmt(r.get('vs_eager'), '9.2f')}{_fmt(r.get('vs_compile'), '9.2f')}"
        )
    for (bench, impl), why in skipped.items():
        print(f"{bench} {impl}: skipped, {why}")
    for r in rows:
        if r.get("error"):
            print(f"{r['bench']}: FAILED, {r['error']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m giftnet.bench.kernels", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (CI smoke test on a CPU)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--csv", type=Path, help="append the figures to this results CSV")
    ap.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only this benchmark")
    args = ap.parse_args(argv)
    done: list[dict] = []

    def on_rows(new: list[dict]) -> None:
        """Keep what is measured even if a time limit stops the run: CSV rows appended, JSON rewritten."""
        done.extend(new)
        if args.csv:
            record_csv(new, args.csv)
        if args.json:
            atomic_write_text(args.json, json.dumps(done, indent=1, default=str) + "\n")

    rows = run(args.tiny, tuple(args.only or BENCHES), on_rows)
    _print(rows)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1, default=str) + "\n")
    return 1 if rows and all(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
