"""The trainer's data: the built-in demo dataset or a user's iHarmony4-layout root, checked first."""

from __future__ import annotations

import os
from pathlib import Path

from giftnet.training import distributed as dist
from giftnet.training.config import TrainConfig
from pipeline.check import check_dataset
from pipeline.ihd import read_pairs
from pipeline.pairs import DatasetError, Pair


def cache_dir() -> Path:
    base = os.environ.get("GIFTNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "giftnet"
    )
    return Path(base)


def data_root(cfg: TrainConfig) -> Path:
    """The dataset root; builds the demo dataset into the cache on first use (rank 0 only)."""
    if cfg.data is not None:
        root = Path(cfg.data)
        if not root.is_dir():
            raise DatasetError(f"--data {root}: no such directory")
        return root
    n_train, n_test = cfg.demo_pairs
    root = cache_dir() / f"demo-{cfg.demo_size}px-{n_train}-{n_test}-seed{cfg.seed}"
    if dist.is_main():
        from pipeline.synth import build_demo_dataset

        build_demo_dataset(root, n_train=n_train, n_test=n_test, size=cfg.demo_size, seed=cfg.seed)
    dist.barrier()
    return root


def load_pairs(cfg: TrainConfig, root: Path, split: str, log) -> list[Pair]:
    """Pairs of `split`. A broken dataset stops the run before it starts, unless --skip-bad-data:
    then every skipped item is logged and the run goes on with the rest."""
    subsets = list(cfg.subsets) or None
    problems = [p for p in check_dataset(root, subsets, split, decode=False) if p.severity == "error"]
    if problems and not cfg.skip_bad_data:
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(
            f"{root}: {len(problems)} problem(s) in the {split} split (run `python -m pipeline.check {root}` "
            f"for the full report, or pass --skip-bad-data to skip the bad items):\n  {shown}{more}"
        )
    pairs, bad_lines = read_pairs(root, subsets, split, strict=False)
    bad_files = {p.path for p in problems}
    kept = [p for p in pairs if not bad_files & {p.composite, p.mask, p.real}]
    for item in bad_lines:
        log(f"skipped {item}")
    for p in pairs:
        if bad_files & {p.composite, p.mask, p.real}:
            log(f"skipped {p.subset}/{p.name}: a file of this pair has a problem")
    if not kept:
        raise DatasetError(f"{root}: no usable {split} pairs")
    return kept
