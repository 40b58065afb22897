"""Masked modulated convolution at the GiftNet sites: Triton vs grouped conv vs eager vs torch.compile.

Batch 16 of 256x256 images gives the sites E1 (32 ch at 256^2), E2 (64 at 128^2), E3 (128 at
64^2), E4 (256 at 32^2), D2 (64 at 128^2) and D3 (32 at 256^2). Each implementation runs
forward, backward (gradients for x, weight and style) and both, side by side in one process:

- grouped: per-sample weights W''_b materialised and one grouped convolution (StyleGAN2's
  "fused modconv"), the textbook formulation;
- eager: the library reference, scale-conv-scale with cuDNN (`masked_modconv2d_reference`),
  on NCHW and on channels_last inputs (eager-cl);
- compile: torch.compile of the eager reference;
- triton: the fused kernel (`masked_modconv2d_triton`), NCHW and channels_last (triton-cl).

Each row: median milliseconds, TFLOP/s of the convolution work (2 * B * HW * C^2 * 9 per
convolution; forward 1, backward 2, both 3), effective GB/s (bytes any implementation must
move: forward reads x and the mask and writes y; backward reads dy, x and the mask and writes
dx), speed-up over the best eager formulation (grouped, eager, eager-cl) and over compile.

Without CUDA only the grouped and eager formulations run, at a tiny size (a smoke test of the
harness); Triton and torch.compile timings need a GPU and say so.

    python -m giftnet.bench.kernels_modconv [--tiny] [--json OUT] [--dtype bf16|fp16|fp32] [--reps N]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from giftnet.bench.common import fair_baselines, kernel_bench_main, machine, time_ms
from giftnet.kernels.masked_modconv import masked_modconv2d_reference
from giftnet.kernels.testing import GIFTNET_SITES, TRAIN_BATCH, modconv_inputs

SITES = GIFTNET_SITES
BATCH = TRAIN_BATCH
TINY = {"batch": 2, "scale": 16}  # sides divided by 16: E1 is 32 ch at 16x16
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES = ("fwd", "bwd", "fwd+bwd")
EAGER_FORMULATIONS = ("grouped", "eager", "eager-cl")


def masked_modconv2d_grouped(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    mask: torch.Tensor,
    *,
    demodulate: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """The same op with per-sample weights materialised and one grouped convolution (groups = B)."""
    b, c, h, w = x.shape
    dtype = x.dtype
    m = mask.to(dtype)
    wb = weight.float()[None] * style.float()[:, None, :, None, None]  # (B, O, I, 3, 3)
    if demodulate:
        wb = wb * torch.rsqrt(wb.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
    y = F.conv2d((x * m).reshape(1, b * c, h, w), wb.reshape(b * c, c, 3, 3).to(dtype), padding=1, groups=b)
    return m * y.view(b, c, h, w) + (1 - m) * x


def _impls(cuda: bool) -> dict[str, tuple[Callable, bool] | str]:
    """Name -> (function, channels_last input), or the reason it is skipped."""
    impls: dict[str, tuple[Callable, bool] | str] = {
        "grouped": (masked_modconv2d_grouped, False),
        "eager": (masked_modconv2d_reference, False),
        "eager-cl": (masked_modconv2d_reference, True),
    }
    if not cuda:
        msg = "needs CUDA (the CPU run is a tiny smoke test of the harness)"
        impls["compile"] = "torch.compile timing " + msg
        impls["triton"] = impls["triton-cl"] = "Triton timing " + msg
        return impls
    from giftnet.kernels.masked_modconv.autograd import masked_modconv2d_triton

    # One static graph per site (4 shapes): no dynamic-shape kernels, no recompile-limit fallback.
    dynamo = torch._dynamo.config
    for limit in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo, limit):
            setattr(dynamo, limit, max(getattr(dynamo, limit), 64))
    impls["compile"] = (torch.compile(masked_modconv2d_reference, dynamic=False), False)
    impls["triton"] = (masked_modconv2d_triton, False)
    impls["triton-cl"] = (masked_modconv2d_triton, True)
    return impls


def _inputs(batch: int, c: int, side: int, dt: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Seeded inputs with object-like masks (1-3 blobs over 5-50% of each image, not i.i.d. pixels)."""
    t = modconv_inputs(batch, c, side, side, "blob", torch.Generator().manual_seed(0))
    return {k: v.to(device, dt) if k in ("x", "dy") else v.to(device) for k, v in t.items()}


def _mode_fns(fn: Callable, t: dict[str, torch.Tensor], channels_last: bool):
    """(setup, timed) pairs for fwd, bwd and fwd+bwd; the leaves need gradients as in training."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = t["x"].contiguous(memory_format=fmt).requires_grad_(True)
    dy = t["dy"].contiguous(memory_format=fmt)
    leaves = (x, t["weight"].requires_grad_(True), t["style"].requires_grad_(True))

    def forward():
        return fn(*leaves, t["mask"])

    def backward(y):
        return torch.autograd.grad(y, leaves, dy)

    return {
        "fwd": (lambda: None, lambda _: forward()),
        "bwd": (forward, backward),
        "fwd+bwd": (lambda: None, lambda _: backward(forward())),
    }, forward


def _site_rows(site: str, shape: tuple[int, int, int], dt: torch.dtype, impls: dict, reps: int) -> list[dict]:
    batch, c, side = shape
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    t = _inputs(batch, c, side, dt, device)
    conv_flop = 2 * batch * side * side * c * c * 9
    feat = t["x"].numel() * t["x"].element_size()
    mask_bytes = t["mask"].numel() * t["x"].element_size()
    work = {
        "fwd": (conv_flop, 2 * feat + mask_bytes),
        "bwd": (2 * conv_flop, 3 * feat + mask_bytes),
        "fwd+bwd": (3 * conv_flop, 5 * feat + 2 * mask_bytes),
    }
    base = {"site": site, "batch": batch, "channels": c, "side": side, "dtype": str(dt).removeprefix("torch.")}
    rows, times, y_eager = [], {}, None
    for name, entry in impls.items():
        if isinstance(entry, str):
            rows += [{**base, "impl": name, "mode": mode, "ms": None, "skipped": entry} for mode in MODES]
            continue
        fn, channels_last = entry
        modes, forward = _mode_fns(fn, t, channels_last)
        y = forward().detach().float()  # with gradients on, as timed: one graph for torch.compile
        if y_eager is None:
            y_eager = y
        max_diff = (y - y_eager).abs().max().item()  # the implementations must agree
        for mode in MODES:
            setup, timed = modes[mode]
            ms = time_ms(timed, reps, setup)
            times[name, mode] = ms
            flop, nbytes = work[mode]
            rows.append(
                {
                    **base,
                    "impl": name,
                    "mode": mode,
                    "ms": round(ms, 4),
                    "tflops": float(f"{flop / ms / 1e9:.4g}"),
                    "gbps": float(f"{nbytes / ms / 1e6:.4g}"),
                    "max_abs_diff_vs_grouped": max_diff,
                }
            )
    for row in rows:
        if row["ms"] is None:
            continue
        mode = row["mode"]
        best = min(times[k, mode] for k in EAGER_FORMULATIONS if (k, mode) in times)
        row["vs_best_eager"] = round(best / times[row["impl"], mode], 2)
        compiled = times.get(("compile", mode))
        row["vs_compile"] = round(compiled / times[row["impl"], mode], 2) if compiled else None
    return rows


def run(tiny: bool, dtype: str | None = None, reps: int | None = None, on_row=None) -> list[dict]:
    """One row per site, implementation and mode (fwd, bwd, fwd+bwd); see the module docstring.

    on_row(rows): called with each site's rows as soon as they are measured (a run cut short by
    a time limit keeps what it measured).
    """
    cuda = torch.cuda.is_available()
    fair_baselines()
    dt = DTYPES[dtype or ("bf16" if cuda else "fp32")]
    reps = reps or (20 if cuda else 2)
    batch, scale = (TINY["batch"], TINY["scale"]) if tiny else (BATCH, 1)
    info = machine()
    impls = _impls(cuda)
    rows = []
    for site, (c, side) in SITES.items():
        site_rows = [{**row, **info} for row in _site_rows(site, (batch, c, side // scale), dt, impls, reps)]
        rows += site_rows
        if on_row is not None:
            on_row(site_rows)
    return rows


def _print(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    title = f"Masked modulated conv on {first['machine']} (git {first['git']}, {first['date']})"
    table = Table(title=title)
    for col in ("site", "shape", "impl", "mode", "ms", "TFLOP/s", "GB/s", "vs best eager", "vs compile", "max |Δy|"):
        table.add_column(col)
    skipped = {}
    for r in rows:
        shape = f"{r['batch']}x{r['channels']}x{r['side']}^2 {r['dtype']}"
        if r["ms"] is None:
            skipped[r["impl"]] = r["skipped"]
            continue
        table.add_row(
            r["site"],
            shape,
            r["impl"],
            r["mode"],
            f"{r['ms']:.3f}",
            f"{r['tflops']:.3g}",
            f"{r['gbps']:.3g}",
            f"{r['vs_best_eager']:.2f}x",
            "-" if r["vs_compile"] is None else f"{r['vs_compile']:.2f}x",
            f"{r['max_abs_diff_vs_grouped']:.2g}",
        )
    Console(width=200).print(table)
    for impl, reason in skipped.items():
        print(f"{impl}: skipped, {reason}")
    print("Goal (issue 5): fwd+bwd in bf16 >= 1.3x the best eager formulation and >= 1x compile at every site.")


def main(argv: list[str] | None = None) -> int:
    return kernel_bench_main(argv, __doc__.splitlines()[0], DTYPES, run, _print)


if __name__ == "__main__":
    raise SystemExit(main())
