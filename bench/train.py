"""Training throughput: images/s of full harmonization-stage steps, five engine configurations side by side.

Each step is the trainer's own `train_step`: the frozen teacher's forward, the student's forward
and backward, the relation-distillation loss and the Adam step, fed by `make_train_loader`:

    a) fp32, reference ops (PyTorch conv / einsum), PyTorch DataLoader + PIL: the baseline;
    b) a + mixed precision (bf16, fp16 where bf16 is unsupported) and channels_last;
    c) b + the Triton kernels (modconv_impl / relation_impl "auto": Triton on CUDA);
    d) c + the DALI pipeline: the engine as shipped;
    e) d + torch.compile of the student (as `--compile` in the trainer).

The configurations alternate in rounds (a..e, then e..a, ...) so a noisy machine slows each
alike. Every segment opens a fresh loader iterator (worker start-up and pipeline build fall in
its warm-up steps), then times `--steps` steps with the GPU synchronised at both ends; data
loading is inside the clock. Model FLOPs per image are counted with FlopCounterMode over one
step of a) (student forward + backward, teacher forward); MFU is achieved model FLOP/s over the
GPU's dense bf16 peak (docs/kernels.md, "Rooflines"), for every row alike. Peak memory (CUDA only) is
the segment's peak allocation above what was resident at its start, plus this configuration's
own weights and optimizer state. Without CUDA, rows c and e are skipped with the reason, and d
runs when DALI imports (CPU decoding, reference ops).

    python -m giftnet.bench.train [--tiny] [--json OUT] [--csv results.csv] [--steps N] [--data ROOT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from giftnet.bench.common import append_results, csv_records, machine, peaks
from giftnet.bench.train_setup import CONFIGS, Plan, Setup, count_flops, load_pairs, mixed_precision, skip_reason
from giftnet.pipeline import dali_loader

__all__ = ["CONFIGS", "Plan", "Setup", "count_flops", "main", "run", "skip_reason"]

FULL = {"base_channels": 32, "crop": 256, "batch": 16, "warmup": 3, "steps": 12, "rounds": 2, "image_size": 384}
TINY = {"base_channels": 8, "crop": 32, "batch": 2, "warmup": 1, "steps": 2, "rounds": 2, "image_size": 48}
METRICS = ("images_per_s", "ms_per_step", "vs_a", "peak_mem_mb", "gflop_per_image", "achieved_tflops", "mfu")


def _base_row(key: str, plan: Plan, precision: str | None) -> dict:
    spec = CONFIGS[key]
    return {
        "config": key,
        "label": spec["label"],
        "precision": precision if spec["mixed"] else "fp32",
        "channels_last": spec["mixed"],
        "impl": spec["impl"],
        "backend": spec["backend"],
        "compile": bool(spec.get("compile")),
        "size": f"b{plan.batch} {plan.crop}px c{plan.base_channels}",
        "batch_size": plan.batch,
        "crop_size": plan.crop,
        "base_channels": plan.base_channels,
        "steps": plan.steps * plan.rounds,
        "images_per_s": None,
    }


def _sig(value: float) -> float:
    """Four significant figures (FLOP rates span 1e-4 on a CPU smoke run to 1e2 on a GPU)."""
    return float(f"{value:.4g}")


def _finish(rows: dict[str, dict], setups: dict[str, Setup], flops: int | None, plan: Plan, info: dict) -> list[dict]:
    """Throughput, ratios, memory and MFU for every configuration that ran."""
    peak = peaks(info["gpu"]) if info["gpu"] != "none (no CUDA)" else None
    for key, s in setups.items():
        row = rows[key]
        if row.get("error") or not s.images:
            continue
        ips = s.images / s.seconds
        row |= {
            "images_per_s": round(ips, 2),
            "round_images_per_s": s.round_ips,
            "ms_per_step": round(1e3 * s.seconds * plan.batch / s.images, 2),
            "warmup_s": round(s.warmup_s, 2),
            "loss": s.loss,
            "backend": s.backend,
            "peak_mem_mb": round(s.peak / 2**20, 1) if s.peak else None,
        }
        if flops:
            row["gflop_per_image"] = _sig(flops / plan.batch / 1e9)
            row["achieved_tflops"] = _sig(ips * flops / plan.batch / 1e12)
            row["mfu"] = _sig(ips * flops / plan.batch / 1e12 / peak["bf16_tflops"]) if peak else None
    base = rows["a"].get("images_per_s")
    for row in rows.values():
        row["vs_a"] = round(row["images_per_s"] / base, 2) if base and row.get("images_per_s") else None
        row["peak_bf16_tflops"] = peak["bf16_tflops"] if peak else None
        row.update(info)
    return [rows[k] for k in CONFIGS if k in rows]


def make_plan(tiny: bool, overrides: dict[str, int | None], workers: int | None) -> Plan:
    """The sizes: the tiny or full defaults with the command line's overrides."""
    size = dict(TINY if tiny else FULL)
    size |= {k: v for k, v in overrides.items() if v is not None and k != "crop"}
    crop = overrides.get("crop")
    if crop is not None:
        size["crop"], size["image_size"] = crop, crop * 3 // 2
    if workers is None:
        workers = 0 if tiny else min(8, max(1, len(os.sched_getaffinity(0)) - 1))
    return Plan(workers=workers, **size)


def build(rows: dict[str, dict], plan: Plan, pairs: list, device: torch.device) -> dict[str, Setup]:
    """A Setup for every configuration that runs here; the others' rows get "skipped" or "error"."""
    precision, precision_note = mixed_precision(device)
    setups: dict[str, Setup] = {}
    for key, row in rows.items():
        reason = skip_reason(key, device, precision)
        if reason:
            row["skipped"] = reason
            continue
        notes = [precision_note] if CONFIGS[key]["mixed"] and precision_note else []
        if device.type != "cuda" and CONFIGS[key]["impl"] == "auto":
            notes.append("on the CPU impl 'auto' runs the reference ops")
        if key == "e" and dali_loader.DALI_IMPORT_ERROR is not None:
            notes.append("DALI not importable: e is c + torch.compile on the DataLoader")
        row["note"] = "; ".join(notes)
        try:
            setups[key] = Setup(key, plan, pairs, device, precision or "fp32")
        except Exception as err:  # a configuration that cannot be built is reported, the others run
            row["error"] = _error(err)
    return setups


def measure(rows: dict[str, dict], setups: dict[str, Setup], plan: Plan, extra_warmup: int, checkpoint) -> None:
    """Rounds of one timed segment per configuration, alternating the order; checkpoint() after each."""
    for r in range(plan.rounds):
        order = list(setups) if r % 2 == 0 else list(reversed(setups))
        for key in order:
            if rows[key].get("error"):
                continue
            try:
                setups[key].segment(epoch=r, warmup=plan.warmup + (extra_warmup if r == 0 else 0))
            except Exception as err:
                rows[key]["error"] = _error(err)
            checkpoint()


def run(
    tiny: bool,
    *,
    steps: int | None = None,
    rounds: int | None = None,
    configs: str = "abcde",
    data: Path | None = None,
    cache: Path | None = None,
    base_channels: int | None = None,
    crop: int | None = None,
    batch: int | None = None,
    workers: int | None = None,
    json_out: Path | None = None,
) -> list[dict]:
    """Benchmark rows, one per configuration in `configs` (each with the machine description)."""
    overrides = {"steps": steps, "rounds": rounds, "base_channels": base_channels, "batch": batch, "crop": crop}
    plan = make_plan(tiny, overrides, workers)
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or "a" not in configs:
        raise ValueError(f"--configs: choose from {''.join(CONFIGS)} and include the baseline a, got {configs!r}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = machine()
    rows = {k: _base_row(k, plan, mixed_precision(device)[0]) for k in CONFIGS if k in configs}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        pairs, source = load_pairs(plan, data, Path(cache) if cache else Path(tmp))
        for row in rows.values():
            row["data"], row["workers"] = source, plan.workers
        setups = build(rows, plan, pairs, device)
        flops = count_flops(setups["a"]) if "a" in setups else None

        def checkpoint() -> None:  # partial results survive a timeout
            if json_out:
                write_json(json_out, _finish({k: dict(v) for k, v in rows.items()}, setups, flops, plan, info))

        measure(rows, setups, plan, 0 if tiny else 2, checkpoint)
    return _finish(rows, setups, flops, plan, info)


def _error(err: BaseException) -> str:
    traceback.print_exception(err, file=sys.stderr)
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]


def write_json(path: Path, rows: list[dict]) -> None:
    Path(path).write_text(json.dumps(rows, indent=1, default=str) + "\n")


def record_csv(rows: list[dict], path: Path) -> None:
    append_results(csv_records("train", rows, ("config", "size"), METRICS), path)


def _print(rows: list[dict]) -> None:
    info = rows[0]
    print(f"training throughput  {info['date']}  git {info['git']}  machine {info['machine']}")
    print(f"CPU {info['cpu']} ({info['cores']} cores, load {info['load_avg_1min']})  GPU {info['gpu']}")
    print(f"torch {info['torch']}  triton {info['triton']}  DALI {info['dali']}  data: {info.get('data')}")
    print(
        f"{info['size']} (batch, crop, base channels); {info['steps']} timed steps per config, {info['workers']} workers"
    )
    head = (
        f"{'cfg':3} {'what':38} {'prec':5} {'data':5} {'img/s':>9} {'vs a':>6} {'ms/step':>9} {'peak MB':>8} {'MFU':>7}"
    )
    print(head)
    for r in rows:
        if r.get("images_per_s") is None:
            why = r.get("skipped") or r.get("error") or "no result"
            print(f"{r['config']:3} {r['label']:38} {'skipped' if r.get('skipped') else 'FAILED'}: {why}")
            continue
        mem = f"{r['peak_mem_mb']:8.0f}" if r.get("peak_mem_mb") else f"{'n/a':>8}"
        mfu = f"{r['mfu']:7.2%}" if r.get("mfu") is not None else f"{'n/a':>7}"
        print(
            f"{r['config']:3} {r['label']:38} {r['precision']:5} {r['backend']:5} {r['images_per_s']:9.1f} "
            f"{r['vs_a']:6.2f} {r['ms_per_step']:9.1f} {mem} {mfu}" + (f"  ({r['note']})" if r.get("note") else "")
        )
    ran = [r for r in rows if r.get("gflop_per_image")]
    if ran:
        r = ran[0]
        print(f"model FLOPs per image (counted, student fwd+bwd + teacher fwd): {r['gflop_per_image']:.3f} GFLOP")
    if info.get("peak_bf16_tflops") is None:
        print("MFU: n/a (no peak figure for this device; MFU is given against a known GPU's dense bf16 peak)")
    if info["gpu"] == "none (no CUDA)":
        print("peak memory: measured on CUDA only")
    by = {r["config"]: r.get("images_per_s") for r in rows}
    a, b, c, d = (by.get(k) for k in "abcd")
    if info["gpu"] != "none (no CUDA)" and a and b and c and d:
        print(
            f"goal (issue 7): d/a = {d / a:.2f} (>= 2), c/b = {c / b:.2f} (>= 1.3); "
            "compare d with giftnet.bench.data's pairs/s (>= 1.5x d's images/s)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m giftnet.bench.train", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CI smoke size (seconds on a CPU)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here (rewritten after every timed segment)")
    ap.add_argument("--csv", type=Path, help="append the figures to this results CSV (e.g. bench/results/results.csv)")
    ap.add_argument("--steps", type=int, help="timed steps per configuration and round (default 12, tiny 2)")
    ap.add_argument("--rounds", type=int, help="rounds of alternating configurations (default 2)")
    ap.add_argument("--configs", default="abcde", help="configurations to run, e.g. abcd (must include a)")
    ap.add_argument("--data", type=Path, help="an iHarmony4-layout root instead of the built-in demo data")
    ap.add_argument("--cache", type=Path, help="keep the generated demo data here (default: a temporary folder)")
    ap.add_argument("--base-channels", type=int, help="model width (default 32, tiny 8)")
    ap.add_argument("--crop", type=int, help="training crop side in pixels (default 256, tiny 32)")
    ap.add_argument("--batch", type=int, help="batch size (default 16, tiny 2)")
    ap.add_argument("--workers", type=int, help="DataLoader workers / DALI threads (default min(8, cores - 1), tiny 0)")
    args = ap.parse_args(argv)
    for name in ("steps", "rounds", "base_channels", "crop", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    try:
        rows = run(
            args.tiny,
            steps=args.steps,
            rounds=args.rounds,
            configs=args.configs,
            data=args.data,
            cache=args.cache,
            base_channels=args.base_channels,
            crop=args.crop,
            batch=args.batch,
            workers=args.workers,
            json_out=args.json,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print(rows)
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        record_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"giftnet.bench.train took {time.perf_counter() - start:.1f} s")
    sys.exit(code)
