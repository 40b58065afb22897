"""The report's PNG plots (giftnet.bench.report): training throughput bars and the kernels' roofline.

matplotlib is optional: without it the plots are skipped and the report keeps its tables.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from giftnet.bench.common import RTX3090, peaks


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_png(found: list[tuple[tuple, dict]], path: Path) -> bool:
    """Bars of images/s per training configuration, one panel per machine; False without matplotlib or data."""
    plt = _pyplot()
    if plt is None or not found:
        return False
    fig, axes = plt.subplots(1, len(found), figsize=(max(8.0, 5.5 * len(found)), 4.2), squeeze=False)
    for ax, (key, configs) in zip(axes[0], found, strict=True):
        names = list(configs)
        values = [configs[n].get("images_per_s", 0.0) for n in names]
        bars = ax.bar([n.split()[0] for n in names], values, color="#4c72b0")
        for bar, name in zip(bars, names, strict=True):
            fig_ = configs[name]
            text = f"{fig_['vs_a']:.2f}x" if "vs_a" in fig_ else ("skipped" if "skipped" in fig_ else "failed")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
        ax.set_title(f"{key[0]}\ngit {key[1]}, {key[2]}", fontsize=9)
        ax.set_ylabel("images/s (higher is better)")
        ax.set_xlabel(next(iter(configs)).partition(" ")[2] if configs else "")
        ax.margins(y=0.15)
    fig.suptitle(
        "Training throughput (ratio to a above each bar)\n"
        "a fp32 reference ops, b +mixed precision/channels_last, c +Triton, d +DALI, e +torch.compile",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _roof(ax, np, peak: dict, style: str) -> None:
    x = np.logspace(-1, 3, 200)
    ax.plot(
        x,
        np.minimum(peak["bf16_tflops"], peak["gbps"] * x / 1e3),
        style,
        color="black",
        lw=1.2,
        label=f"{peak['name']} roof ({peak['source']}): {peak['gbps']:.0f} GB/s, {peak['bf16_tflops']:.0f} TFLOP/s",
    )


COLOURS = {"triton": "#c44e52", "triton-cl": "#dd8452", "compile": "#55a868", "eager": "#4c72b0"}
OTHER = "#8c8c8c"


def roofline_png(gpu_runs: list[tuple[tuple, dict]], path: Path) -> str:
    """Roofline of the modulated convolution and bandwidth bars of the relation loss; returns a caption."""
    plt = _pyplot()
    if plt is None:
        return "(matplotlib is not installed: no plot)"
    import numpy as np

    machine = gpu_runs[0][0][0] if gpu_runs else None
    own = peaks(machine) if machine else None
    own = own if own is not RTX3090 else None  # a second (dashed) roof only for another GPU
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    points, relation, levels = _fwd_bwd_figures(gpu_runs, machine)
    _modconv_axes(ax, np, points, own)
    _relation_axes(bx, relation, levels, own)
    if not machine:
        for axis in (ax, bx):
            axis.text(0.5, 0.5, "no GPU measurements yet", transform=axis.transAxes, ha="center")
    fig.suptitle(f"Kernel roofline: points from {machine or 'no GPU yet'}; solid roof RTX 3090 (spec)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return _roofline_caption(gpu_runs, machine, own)


def _fwd_bwd_figures(gpu_runs: list[tuple[tuple, dict]], machine: str | None) -> tuple[list, dict, list[str]]:
    """The fwd+bwd figures of `machine`: modconv points (site, impl, FLOP/byte, TFLOP/s) and the
    relation loss's GB/s by impl and level (levels in the order they were measured)."""
    points: list[tuple[str, str, float, float]] = []
    relation: defaultdict[str, dict] = defaultdict(dict)
    levels: list[str] = []
    for key, configs in gpu_runs:
        if key[0] != machine:
            continue
        for name, fig_ in configs.items():
            where, impl, mode = [*name.split(), "", "", ""][:3]
            if mode != "fwd+bwd" or "gbps" not in fig_:
                continue
            if key[3] == "kernels_modconv" and fig_.get("tflops"):
                points.append((where, impl, fig_["tflops"] * 1e3 / fig_["gbps"], fig_["tflops"]))
            elif key[3] == "kernels_relation":
                relation[impl][where] = fig_["gbps"]
                levels += [where] if where not in levels else []
    return points, relation, levels


def _modconv_axes(ax, np, points: list, own: dict | None) -> None:
    _roof(ax, np, RTX3090, "-")
    if own:
        _roof(ax, np, own, "--")
    for where, impl, x, tflops in points:
        ax.scatter(x, tflops, color=COLOURS.get(impl, OTHER), label=impl, zorder=3)
        ax.annotate(where, (x, tflops), fontsize=7, xytext=(3, 3), textcoords="offset points")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="arithmetic intensity (FLOP per byte that must move)",
        ylabel="TFLOP/s",
        title="masked modulated conv, fwd+bwd",
    )


def _relation_axes(bx, relation: dict[str, dict], levels: list[str], own: dict | None) -> None:
    width = 0.8 / max(1, len(relation))
    for i, (impl, by_level) in enumerate(relation.items()):
        xs = [levels.index(lv) + i * width for lv in by_level]
        bx.bar(xs, list(by_level.values()), width, label=impl, color=COLOURS.get(impl, OTHER))
    bx.axhline(RTX3090["gbps"], color="black", lw=1.2, label="RTX 3090 936 GB/s (spec)")
    if own:
        bx.axhline(own["gbps"], color="black", ls="--", lw=1.2, label=f"{own['name']} {own['gbps']:.0f} GB/s")
    bx.set_xticks([i + 0.4 - width / 2 for i in range(len(levels))], levels)
    bx.set(ylabel="effective GB/s", title="relation-distillation loss, fwd+bwd (bandwidth-bound)")
    bx.set_ylim(bottom=0, top=1.1 * max([own["gbps"] if own else 0.0, RTX3090["gbps"]]))
    bx.legend(fontsize=7)


def _roofline_caption(gpu_runs: list[tuple[tuple, dict]], machine: str | None, own: dict | None) -> str:
    if not machine:
        return (
            "No GPU kernel measurements in the results yet (CPU runs are harness smoke tests and are not "
            "plotted): only the RTX 3090's roof from its specification is drawn."
        )
    return (
        f"Points measured on **{machine}** (git `{gpu_runs[0][0][1]}`, {gpu_runs[0][0][2]}). "
        "The RTX 3090 roof is drawn from its specification (docs/kernels.md, Rooflines)"
        + ("; the dashed roof is the measuring GPU's." if own else ".")
    )
