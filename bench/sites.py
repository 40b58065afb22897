"""Per-site table of bytes, FLOPs and launches per call, and the background a kernel may skip.

    python -m giftnet.bench.sites --masks FOLDER_OR_ZIP [--masks ...] --out bench/results/sites.md

Everything here is an estimate from data flow (giftnet.bench.sites_model) plus a measurement on real
masks (giftnet.bench.sites_masks); no GPU is used. The report states the machine, git revision and date.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from giftnet.bench.common import git_revision, machine, utc_date
from giftnet.bench.sites_masks import TILES, iter_masks, mask_statistics, parse_tile
from giftnet.bench.sites_model import (
    BATCH,
    GPUS,
    LAUNCH_FLOOR_US,
    RELATION_SITES,
    Shape,
    fwd_tile,
    grad_tile,
    modconv_compile,
    modconv_ideal,
    modconv_traced,
    modconv_triton,
    relation_compile,
    relation_ideal,
    relation_traced,
    relation_triton,
    site_shapes,
    tile_name,
    total,
)
from giftnet.errors import run_cli
from giftnet.fileio import atomic_write_text

MODCONV_IMPLS = ("triton", "eager", "grouped", "compile (est.)", "cudnn conv only", "ideal")
RELATION_IMPLS = ("triton", "eager", "compile (est.)", "ideal 3-pass")
SKIP_TILES = ("8x8", "8x16", "4x8", "flat64")


def short_label(label: str) -> str:
    """A mask set's short name: the first path component that is not a generic folder name."""
    parts = [p for p in label.split("/") if p not in ("data", "photos", "masks")]
    return (parts or [label])[0].removesuffix(".zip")


def kernel_skips(stats: dict[str, dict], c: int, side: int) -> dict[str, tuple[float, float]]:
    """Mask set -> (skipped share of the conv's tiles, of the weight/style correlation's pixel steps)
    at a site, for the tiles the kernels use at C = c (giftnet.bench.sites_model.fwd_tile, grad_tile)."""
    th, tw, _ = fwd_tile(c)
    _, _, ch, cw = grad_tile(c)
    return {
        short_label(name): (
            float(st["sides"][side]["skip"][tile_name(th, tw)].mean()),
            float(st["sides"][side]["skip"][tile_name(ch, cw)].mean()),
        )
        for name, st in stats.items()
    }


def modconv_rows(s: Shape, skips: dict[str, tuple[float, float]] | None = None) -> dict[str, dict]:
    """Impl -> {fwd, bwd, per-GPU totals} of one masked modconv call (fwd + bwd); "triton" is
    the all-foreground worst case, "triton skip: X" the kernels on mask set X's mean skip."""
    rows = {}
    impls = list(MODCONV_IMPLS)
    for name in skips or {}:
        impls.insert(1 + impls.index("triton") + list(skips or {}).index(name), f"triton skip: {name}")
    for impl in impls:
        per_gpu = {}
        for gpu in GPUS:
            if impl.startswith("triton skip: "):
                sk_fwd, sk_corr = (skips or {})[impl.removeprefix("triton skip: ")]
                fwd, bwd = modconv_triton(s, gpu, fg=1.0 - sk_fwd, fg_corr=1.0 - sk_corr)
            elif impl == "triton":
                fwd, bwd = modconv_triton(s, gpu)
            elif impl in ("eager", "grouped"):
                fwd, bwd = modconv_traced(s, impl)
            elif impl == "cudnn conv only":
                fwd, bwd = modconv_traced(s, "cudnn")
            elif impl == "ideal":
                fwd, bwd = modconv_ideal(s)
            else:
                fwd, bwd = modconv_compile(s)
            per_gpu[gpu.name] = {"fwd": total(fwd), "bwd": total(bwd), "all": total(fwd + bwd, gpu)}
        rows[impl] = per_gpu
    return rows


def relation_rows(s: Shape) -> dict[str, dict]:
    fns = {"triton": relation_triton, "eager": relation_traced, "compile (est.)": relation_compile}
    fns["ideal 3-pass"] = relation_ideal
    rows = {}
    for impl, fn in fns.items():
        fwd, bwd = fn(s)
        rows[impl] = {g.name: {"fwd": total(fwd), "bwd": total(bwd), "all": total(fwd + bwd, g)} for g in GPUS}
    return rows


def _mb(x: float) -> str:
    return "-" if math.isnan(x) else f"{x / 1e6:,.1f}"


def _cost_table(title: str, rows_by_site: dict[str, dict], ref: str, feat_mb: dict[str, float]) -> list[str]:
    g0, g1 = GPUS
    out = [f"### {title}", ""]
    out.append(
        "| site | impl | fwd MB | bwd MB | feature passes | GFLOP (tensor) | launches | L2 req. MB "
        f"| est. us {g0.name} | x vs {ref} | est. us {g1.name} | x vs {ref} | L2 GB/s needed {g0.name} / {g1.name} | launch-floor share {g1.name} |"
    )
    out.append("|" + "---|" * 14)
    for site, rows in rows_by_site.items():
        for impl, per in rows.items():
            a0, a1 = per[g0.name], per[g1.name]
            fwd, bwd, all0 = a0["fwd"], a0["bwd"], a0["all"]
            passes = (fwd["dram"] + bwd["dram"]) / (feat_mb[site] * 1e6)
            us0, us1 = all0["us"], a1["all"]["us"]
            r0 = per_ref(rows, ref, g0.name) / us0
            r1 = per_ref(rows, ref, g1.name) / us1
            l2 = a1["all"]["l2"]
            l2_need = "-" if math.isnan(l2) else f"{l2 / (us0 * 1e3):,.0f} / {l2 / (us1 * 1e3):,.0f}"
            out.append(
                f"| {site} | {impl} | {_mb(fwd['dram'])} | {_mb(bwd['dram'])} | {passes:.1f} "
                f"| {all0['tc_flops'] / 1e9:.1f} | {fwd['launches']}+{bwd['launches']} | {_mb(a0['all']['l2'])} "
                f"| {us0:,.0f} | {r0:.2f} | {us1:,.0f} | {r1:.2f} | {l2_need} | {a1['all']['floor_us'] / us1:.0%} |"
            )
    return [*out, ""]


def per_ref(rows: dict, ref: str, gpu: str) -> float:
    return rows[ref][gpu]["all"]["us"]


def _skip_tables(stats: dict[str, dict], sites: dict[str, tuple[int, int]]) -> list[str]:
    out = []
    for name, st in stats.items():
        out += [f"### Background on {name} ({st['count']} masks)", ""]
        out.append("| side (sites) | fg mean | cells touched | " + " | ".join(f"skip {t}" for t in TILES) + " |")
        out.append("|" + "---|" * (3 + len(TILES)))
        for side, rec in st["sides"].items():
            at = ", ".join(k for k, (_, sd) in sites.items() if sd == side)
            cells = []
            for t in TILES:
                v = rec["skip"][t]
                cells.append(f"{v.mean():.3f} ({np.percentile(v, 10):.2f}-{np.percentile(v, 90):.2f})")
            out.append(
                f"| {side} ({at}) | {rec['fg'].mean():.3f} | {rec['touched'].mean():.3f} | " + " | ".join(cells) + " |"
            )
        out.append("")
    return out


def skip_speedup(s: Shape, skip: float) -> dict[str, float]:
    """Roofline speed-up of today's Triton modconv (fwd + bwd) when it skips `skip` of its tiles."""
    out = {}
    for gpu in GPUS:
        fwd, bwd = modconv_triton(s, gpu)
        full = total(fwd + bwd, gpu)["us"]
        fwd, bwd = modconv_triton(s, gpu, fg=1.0 - skip)
        part = total(fwd + bwd, gpu)["us"]
        out[gpu.name] = full / part
    return out


def _kernel_skip_table(stats: dict[str, dict], sites: dict[str, tuple[int, int]]) -> list[str]:
    out = [
        "| data | site | conv tile (fwd, dx) | skipped | correlation step | skipped |",
        "|---|---|---|---|---|---|",
    ]
    for name, st in stats.items():
        for site, (c, side) in sites.items():
            th, tw, _ = fwd_tile(c)
            _, _, ch, cw = grad_tile(c)
            a, b = (st["sides"][side]["skip"][tile_name(*t)] for t in ((th, tw), (ch, cw)))
            out.append(
                f"| {name} | {site} | {th}x{tw} | {a.mean():.3f} ({np.percentile(a, 10):.2f}-{np.percentile(a, 90):.2f}) "
                f"| {ch}x{cw} | {b.mean():.3f} ({np.percentile(b, 10):.2f}-{np.percentile(b, 90):.2f}) |"
            )
    return [*out, ""]


def _speedup_table(stats: dict[str, dict], sites: dict[str, tuple[int, int]]) -> list[str]:
    g0, g1 = GPUS
    out = ["| data | site | tile | skippable | work bound 1/(1-s) "
           f"| roofline bound {g0.name} | roofline bound {g1.name} |", "|" + "---|" * 7]  # fmt: skip
    for name, st in stats.items():
        for site, (c, side) in sites.items():
            for t in SKIP_TILES:
                sk = float(st["sides"][side]["skip"][t].mean())
                sp = skip_speedup(Shape(BATCH, c, side), sk)
                out.append(
                    f"| {name} | {site} | {t} | {sk:.3f} | {1 / (1 - sk):.2f} | {sp[g0.name]:.2f} | {sp[g1.name]:.2f} |"
                )
    return [*out, ""]


def _intro(command: str, shapes: dict[str, Shape]) -> list[str]:
    """The report's opening: what the figures are, the hardware figures used, the site shapes."""
    info = machine()
    lines = [
        "# GiftNet sites: bytes, FLOPs, launches per call, and the background on real masks",
        "",
        "**Estimates from data flow, not GPU measurements.** Eager rows are traced op by op on meta tensors",
        "at the real shapes (exact op counts; each op reads its inputs and writes its outputs once);",
        "Triton rows restate the data flow of kernels/ at this revision; torch.compile rows are a model",
        "of Inductor's fusion (see bench/sites_model.py). Times are a roofline per launch, summed:",
        f"max(bytes / DRAM bandwidth, FLOPs / peak, {LAUNCH_FLOOR_US:g} us floor). They ignore L2, latency",
        "and occupancy, so they are lower bounds; measure on the GPU before trusting a ratio.",
        "",
        f"Generated by `{command}` on {info['machine']}, git {git_revision()}, {utc_date()}.",
        f"Batch {BATCH}, 256x256 images, bf16 features, fp32 weights; fwd+bwd = forward plus the gradients",
        "for x, weight and style (modconv) or the student (relation loss).",
        "",
        "## Hardware figures used",
        "",
    ]
    for g in GPUS:
        lines.append(f"- **{g.name}**: {g.source}; {g.sms} SMs.")
    lines += [
        "- The team measured about 4.3 TB/s copy and 790 TFLOP/s bf16 matmul on an H200: real",
        "  kernels reach 80-90% of the figures above at best.",
        "",
        "## Shapes",
        "",
        "| site | channels | side | one feature map (MB) | one 3x3 conv (GFLOP) |",
        "|---|---|---|---|---|",
    ]
    for k, s in shapes.items():
        lines.append(f"| {k} | {s.c} | {s.side} | {s.feat / 1e6:.1f} | {s.conv_flops / 1e9:.2f} |")
    return [*lines, ""]


def build_report(stats: dict[str, dict], command: str) -> str:
    """The whole Markdown report."""
    sites = site_shapes()
    shapes = {k: Shape(BATCH, c, side) for k, (c, side) in sites.items()}
    feat_mb = {k: s.feat / 1e6 for k, s in shapes.items()}
    mod = {k: modconv_rows(s, kernel_skips(stats, s.c, s.side)) for k, s in shapes.items()}
    rel = {k: relation_rows(shapes[k]) for k in RELATION_SITES}
    lines = _intro(command, shapes)
    lines += _cost_table("Masked modulated convolution, fwd+bwd per call", mod, "eager", feat_mb)
    lines += [
        "Feature passes = DRAM bytes / one feature map. L2 req.: bytes the SMs request from L2 in",
        "today's Triton kernels (each program reloads its input tile for each of the 9 taps and",
        "each output-channel tile), an upper bound as L1 may serve some. 'L2 GB/s needed' is the",
        "L2 bandwidth at which those requests take as long as the roofline time: above the GPU's",
        "real L2 bandwidth the kernel is L2-bound, not DRAM- or tensor-bound. Launch-floor share:",
        f"the part of the estimated time spent in launches too small to reach a roofline (the {LAUNCH_FLOOR_US:g} us",
        "floor decides them): on the H200 the small torch ops around today's kernels weigh more than",
        "the kernels' own traffic at some sites, and the skip bounds below are limited by them.",
        "",
    ]
    lines += _cost_table("Relation-distillation loss, fwd+bwd per call", rel, "eager", feat_mb)
    lines += ["## Background on real masks", ""]
    lines += [
        "Masks resized to 256 (bilinear), then area-averaged to each site's side as giftnet.gift does; a",
        "tile (rows x columns of map cells; flatN = N consecutive row-major pixels, as the kernels",
        "tiled before they skipped) is skippable when all its cells are exactly 0. Mean over images",
        "(10th-90th percentile).",
        "",
    ]
    lines += _skip_tables(stats, sites)
    lines += [
        "### Tiles the kernels skip",
        "",
        "The tiles the Triton modconv runs at each site's channel count (the configs that fit C;",
        "the autotuner may pick another on the GPU) and the mean share of them that holds no",
        "foreground: the forward and dx copy those, the weight/style correlation skips them",
        "(it also skips a step whose tap-shifted tile is background, so it skips at least this).",
        "These are the fractions in the 'triton skip' rows above.",
        "",
    ]
    lines += _kernel_skip_table(stats, sites)
    lines += [
        "## Skip-background speed-up bounds (today's Triton modconv, fwd+bwd)",
        "",
        "Work bound: FLOPs and tile loads fall by the skippable fraction s. Roofline bound: the same",
        "model as above with skipped tiles doing no convolution work and the correlation reading",
        "nothing for them, while forward and dx still copy x (their DRAM bytes stay); one tile",
        "shape for every kernel here, against the all-foreground 'triton' row.",
        "",
    ]
    lines += _speedup_table(stats, sites)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m giftnet.bench.sites", description=__doc__.split("\n\n")[0])
    parser.add_argument("--masks", action="append", required=True, help="a folder or .zip of mask images (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown report to write")
    args = parser.parse_args(argv)
    stats = {}
    for src in args.masks:
        label = "/".join(Path(src).parts[-3:])
        print(f"measuring masks in {src}", file=sys.stderr)
        stats[label] = mask_statistics(
            iter_masks(src), sorted({side for _, side in site_shapes().values()}, reverse=True)
        )
    for t in SKIP_TILES:
        parse_tile(t)
    # Mask sources appear by their last three path components: where a data set lives is local.
    shown = ["--masks .../" + "/".join(Path(m).parts[-3:]) for m in args.masks] + [f"--out {args.out}"]
    command = "python -m giftnet.bench.sites " + " ".join(shown)
    atomic_write_text(args.out, build_report(stats, command))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("giftnet.bench.sites", main))
