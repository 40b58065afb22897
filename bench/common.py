"""What every benchmark shares: the machine description, synchronised timing, GPU peaks, results CSV.

Every figure we publish carries the machine (GPU name, or CPU name on a CPU-only run), the git
revision and the UTC date; `machine()` gathers them. `PEAKS` holds the roofline numbers of
docs/kernels.md ("Rooflines"), looked up by a substring of the GPU's name. `append_results` adds rows to
bench/results/results.csv (one line per figure, so benchmarks with different figures share one
file; `giftnet.bench.report` reads it back).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS_CSV = REPO / "bench" / "results" / "results.csv"
CSV_COLUMNS = ("machine", "git", "date", "benchmark", "config", "metric", "value", "note")

# Roofline numbers (docs/kernels.md, "Rooflines"), matched by a substring of torch.cuda.get_device_name().
PEAKS: dict[str, dict] = {
    "3090": {"name": "RTX 3090", "gbps": 936.0, "bf16_tflops": 71.0, "source": "specification (sm_86)"},
    "H200": {"name": "H200", "gbps": 4300.0, "bf16_tflops": 790.0, "source": "measured copy / bf16 matmul"},
}
RTX3090 = PEAKS["3090"]


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_revision() -> str:
    """`git rev-parse --short HEAD` of this checkout, "unknown" outside git (e.g. a copied tree)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def utc_date() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def core_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _version(module: str) -> str:
    """A module's __version__, or "missing" when it does not import."""
    try:
        mod = importlib.import_module(module)
    except Exception:  # any import failure means "not usable here"
        return "missing"
    return str(getattr(mod, "__version__", "unknown"))


def machine() -> dict:
    """CPU and GPU names, core count, library versions, git revision, UTC date and the load average.

    The load average says whether other work shared the CPUs during the run (figures then drop).
    "machine" is the GPU's name, or the CPU's name with " (CPU only)" when there is no CUDA.
    """
    from giftnet.pipeline import dali_loader  # late: keeps giftnet.bench.common light for the report

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (no CUDA)"
    dali = "missing" if dali_loader.DALI_IMPORT_ERROR else __import__("nvidia.dali").dali.__version__
    return {
        "machine": gpu if torch.cuda.is_available() else f"{cpu} (CPU only)",
        "cpu": cpu,
        "cores": core_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "dali": dali,
        "pillow": _version("PIL"),
        "git": git_revision(),
        "date": utc_date(),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def peaks(device_name: str) -> dict | None:
    """Roofline numbers of a known GPU (by a substring of its name), None when unknown or a CPU."""
    return next((v for k, v in PEAKS.items() if k in device_name), None)


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so wall-clock times cover it."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize(device)


class Timer:
    """Wall time of a block with the GPU synchronised at both ends: `with Timer(dev) as t: ...; t.seconds`."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device, self.seconds = device, math.nan

    def __enter__(self) -> Timer:
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


L2_FLUSH_BYTES = 256 << 20  # larger than any GPU's L2 (H200: 60 MB; RTX 3090: 6 MB)
_l2_buffer: torch.Tensor | None = None


def flush_l2() -> None:
    """Overwrite a buffer larger than the GPU's L2 so the next timed call starts with a cold cache.

    Without it a benchmark that repeats one call on the same tensors measures L2 hits (the
    inputs of E3/E4 fit in an H200's L2) and flatters whichever implementation re-reads most.
    """
    global _l2_buffer
    if not torch.cuda.is_available():
        return
    if _l2_buffer is None:
        _l2_buffer = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    _l2_buffer.zero_()


def fair_baselines() -> None:
    """cuDNN picks its fastest algorithm per shape, as a tuned eager or compiled model would."""
    torch.backends.cudnn.benchmark = True


def time_ms(
    timed: Callable[[object], object], reps: int, setup: Callable[[], object] = lambda: None, warmup: int = 3
) -> float:
    """Median milliseconds of timed(setup()); setup and an L2 flush run outside the clock.

    Warm-up calls first (autotuning, compiling, cuDNN's algorithm search). CUDA events on a GPU,
    perf_counter on the CPU.
    """
    cuda = torch.cuda.is_available()
    for _ in range(warmup if cuda else 1):
        timed(setup())
    times = []
    for _ in range(reps):
        state = setup()
        if cuda:
            flush_l2()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            timed(state)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            timed(state)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def median_ms(fn: Callable[[], object], reps: int, warmup: int = 3) -> float:
    """Median milliseconds of `fn()` (see `time_ms`)."""
    return time_ms(lambda _: fn(), reps, warmup=warmup)


def row_machine(row: dict) -> str:
    """The machine a result row came from, whichever benchmark wrote it."""
    if row.get("machine"):
        return str(row["machine"])
    gpu = str(row.get("gpu", ""))
    if gpu and not gpu.startswith("none"):
        return gpu
    if row.get("device") and "no CUDA" not in str(row["device"]):
        return str(row["device"])
    cpu = row.get("cpu") or str(row.get("device", "unknown CPU")).replace(" (no CUDA)", "")
    return f"{cpu} (CPU only)"


def csv_records(benchmark: str, rows: Iterable[dict], config_keys: tuple[str, ...], metrics: tuple[str, ...]) -> list:
    """Long-format records: one per (row, numeric metric); a skipped row gives one "skipped" record."""
    out = []
    for row in rows:
        base = {
            "machine": row_machine(row),
            "git": row.get("git", "unknown"),
            "date": row.get("date", utc_date()),
            "benchmark": benchmark,
            "config": " ".join(str(row[k]) for k in config_keys if row.get(k) not in (None, "")),
        }
        if row.get("skipped") or row.get("error"):
            note = str(row.get("skipped") or row.get("error"))
            out.append({**base, "metric": "skipped" if row.get("skipped") else "error", "value": "", "note": note})
            continue
        for metric in metrics:
            value = row.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out.append({**base, "metric": metric, "value": f"{value:.6g}", "note": row.get("note", "")})
    return out


def append_results(records: list[dict], path: Path = RESULTS_CSV) -> Path:
    """Append records (CSV_COLUMNS keys) to the results CSV, writing the header to a new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(records)
    return path


def read_results(path: Path = RESULTS_CSV) -> list[dict]:
    """The records of a results CSV (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a results CSV, columns {sorted(missing)} are missing")
        return list(reader)


def kernel_bench_main(
    argv: list[str] | None,
    description: str,
    dtypes: Iterable[str],
    run: Callable[..., list[dict]],
    show: Callable[[list[dict]], None],
) -> int:
    """The command line both kernel benchmarks share: --tiny, --json, --dtype, --reps."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CI smoke test)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--dtype", choices=sorted(dtypes), help="input dtype (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--reps", type=int, help="timed repetitions per row (median reported)")
    args = parser.parse_args(argv)
    rows = run(args.tiny, args.dtype, args.reps)
    show(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0
