"""Relation-distillation loss, forward + backward: Triton kernel vs eager reference vs torch.compile.

At the encoder levels E1-E4 of a 256x256 batch of 16 (32 ch at 256^2, 64 at 128^2, 128 at 64^2,
256 at 32^2), the three implementations run side by side in one process. Each row gives the
median milliseconds of loss + student gradient, the speed-up over eager and over
torch.compile, and the effective bandwidth against the memory roofline: the bytes that any
implementation must move (student, teacher and mask read once, the student gradient written
once) divided by the time, as a fraction of the GPU's peak (RTX 3090 936 GB/s, H200 ~4.3 TB/s).

Without CUDA only the eager reference runs, at a tiny size (a smoke test of the harness);
Triton and torch.compile timings need a GPU and say so.

    python -m giftnet.bench.kernels_relation [--tiny] [--json OUT] [--dtype bf16|fp16|fp32] [--reps N]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from giftnet.bench.common import fair_baselines, kernel_bench_main, machine, median_ms, peaks
from giftnet.kernels.relation import relation_distill_loss_reference
from giftnet.kernels.testing import TRAIN_BATCH, make_mask

LEVELS = {"E1": (32, 256), "E2": (64, 128), "E3": (128, 64), "E4": (256, 32)}  # channels, side
BATCH = TRAIN_BATCH
TINY = {"batch": 2, "scale": 16}  # sides divided by 16: E1 is 32 ch at 16x16
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GAMMA = 0.01
# Feature passes of the Triton path (forward: foreground sums of student and teacher, logits
# of both, f-path reduction of the student; backward: read student, write gradient) against
# the roofline's three (student, teacher, gradient).
TRITON_FEATURE_PASSES = 7


def roofline_bytes(b: int, c: int, side: int, dtype: torch.dtype) -> int:
    """Student and teacher read once, fp32 mask read once, student gradient written once."""
    feat = b * c * side * side * torch.finfo(dtype).bits // 8
    return 3 * feat + b * side * side * 4


def _impls(cuda: bool) -> dict[str, Callable | str]:
    """Implementation name -> loss function, or the reason it is skipped."""
    impls: dict[str, Callable | str] = {"eager": relation_distill_loss_reference}
    if not cuda:
        msg = "needs CUDA (the CPU run is a tiny smoke test of the harness)"
        impls["compile"] = "torch.compile timing " + msg
        impls["triton"] = "Triton timing " + msg
        return impls
    # static shapes: each level gets its own specialised compile, as a training run would
    impls["compile"] = torch.compile(relation_distill_loss_reference, dynamic=False)
    from giftnet.kernels.relation.autograd import relation_distill_loss_triton

    impls["triton"] = relation_distill_loss_triton
    return impls


def _step(fn: Callable, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> Callable[[], object]:
    """One training step's worth of work: the loss and the student's gradient."""

    def step():
        loss = fn(student, teacher, mask, gamma=GAMMA)
        return torch.autograd.grad(loss, student)

    return step


def _level_rows(level: str, shape: tuple[int, int, int], dt: torch.dtype, impls: dict, reps: int) -> list[dict]:
    """Time every implementation on one level's maps; rows without the machine fields."""
    batch, c, side = shape
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    gen = torch.Generator(device="cpu").manual_seed(0)
    student = torch.randn(batch, c, side, side, generator=gen).to(device, dt).requires_grad_(True)
    teacher = torch.randn(batch, c, side, side, generator=gen).to(device, dt)
    mask = make_mask("blob", batch, side, side, gen).to(device)  # object-like: 1-3 blobs, 5-50% of the image
    base: dict[str, Any] = {"level": level, "batch": batch, "channels": c, "side": side}
    base["dtype"] = str(dt).removeprefix("torch.")
    base["roofline_bytes"] = roofline_bytes(batch, c, side, dt)
    rows: list[dict[str, Any]] = []
    times: dict[str, float] = {}
    for name, fn in impls.items():
        if isinstance(fn, str):
            rows.append({**base, "impl": name, "ms": None, "skipped": fn})
            continue
        times[name] = median_ms(_step(fn, student, teacher, mask), reps)
        with torch.no_grad():
            loss = float(fn(student, teacher, mask, gamma=GAMMA))  # the implementations must agree
        rows.append({**base, "impl": name, "ms": round(times[name], 4), "loss": loss})
    for row in rows:
        if row["ms"] is not None:
            row["gbps"] = round(base["roofline_bytes"] / times[row["impl"]] / 1e6, 1)
            row["vs_eager"] = round(times["eager"] / times[row["impl"]], 2)
            row["vs_compile"] = round(times["compile"] / times[row["impl"]], 2) if "compile" in times else None
    return rows


def run(tiny: bool, dtype: str | None = None, reps: int | None = None, on_row=None) -> list[dict]:
    """One row per level and implementation; see the module docstring. on_row(rows) gets each
    level's rows as soon as they are measured."""
    cuda = torch.cuda.is_available()
    fair_baselines()
    dt = DTYPES[dtype or ("bf16" if cuda else "fp32")]
    reps = reps or (20 if cuda else 3)
    batch, scale = (TINY["batch"], TINY["scale"]) if tiny else (BATCH, 1)
    info = machine()
    peak = (peaks(info["machine"]) or {}).get("gbps") if cuda else None
    impls = _impls(cuda)
    rows = []
    for level, (c, side) in LEVELS.items():
        level_rows = _level_rows(level, (batch, c, side // scale), dt, impls, reps)
        for row in level_rows:
            row.update(info, peak_gbps=peak)
            if row["ms"] is not None:
                row["peak_fraction"] = round(row["gbps"] / peak, 3) if peak else "unknown GPU" if cuda else "n/a on CPU"
        rows += level_rows
        if on_row is not None:
            on_row(level_rows)
    return rows


def _print(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    title = f"Relation-distillation loss fwd+bwd on {first['machine']} (git {first['git']}, {first['date']})"
    table = Table(title=title)
    for col in ("level", "shape", "impl", "ms", "GB/s", "of peak", "vs eager", "vs compile", "loss"):
        table.add_column(col)
    skipped = {}
    for r in rows:
        shape = f"{r['batch']}x{r['channels']}x{r['side']}^2 {r['dtype']}"
        if r.get("ms") is None:
            skipped[r["impl"]] = r["skipped"]
            table.add_row(r["level"], shape, r["impl"], *["skipped"] + ["-"] * 5)
            continue
        frac = r["peak_fraction"]
        table.add_row(
            r["level"],
            shape,
            r["impl"],
            f"{r['ms']:.3f}",
            f"{r['gbps']:.0f}",
            f"{frac:.0%}" if isinstance(frac, float) else str(frac),
            f"{r['vs_eager']:.2f}x",
            "-" if r.get("vs_compile") is None else f"{r['vs_compile']:.2f}x",
            f"{r['loss']:.6g}",
        )
    Console().print(table)
    for impl, reason in skipped.items():
        print(f"{impl}: {reason}")
    print(
        f"Roofline bytes: student + teacher + mask read once, gradient written once. The Triton path "
        f"moves {TRITON_FEATURE_PASSES} feature-sized passes against the roofline's 3, so it cannot pass "
        f"{3 / TRITON_FEATURE_PASSES:.0%} of peak unless caches hold the re-reads."
    )


def main(argv: list[str] | None = None) -> int:
    return kernel_bench_main(argv, __doc__.splitlines()[0], DTYPES, run, _print)


if __name__ == "__main__":
    raise SystemExit(main())
