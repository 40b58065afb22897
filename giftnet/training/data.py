"""The trainer's data: the built-in demo dataset or a user's iHarmony4-layout root, checked first."""

from __future__ import annotations

import os
from pathlib import Path

from giftnet.pipeline.check import check_dataset, require_valid
from giftnet.pipeline.ihd import read_pairs
from giftnet.pipeline.pairs import DatasetError, Pair
from giftnet.pipeline.validation import carve_validation
from giftnet.training import distributed as dist
from giftnet.training.config import TrainConfig


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
        from giftnet.pipeline.builders.synth import build_demo_dataset

        build_demo_dataset(root, n_train=n_train, n_test=n_test, size=cfg.demo_size, seed=cfg.seed)
    dist.barrier()
    return root


def load_pairs(cfg: TrainConfig, root: Path, split: str, log) -> list[Pair]:
    """Pairs of `split`. A broken dataset stops the run before it starts, unless --skip-bad-data:
    then every skipped item is logged and the run goes on with the rest."""
    subsets = list(cfg.subsets) or None
    # The quick check (lists, existence, empty files, headers, sizes) runs on every start. Skipping
    # bad items decodes every image too, so that a truncated file is skipped here rather than
    # stopping the run when the loader meets it (the pair list must not change across resumes).
    if not cfg.skip_bad_data:
        require_valid(root, subsets, split, decode=False, advice=", or pass --skip-bad-data to skip the bad items")
        problems = []
    else:
        problems = [p for p in check_dataset(root, subsets, split, decode=True) if p.severity == "error"]
    pairs, bad_lines = read_pairs(root, subsets, split, strict=False)
    faults: dict[Path, list[str]] = {}
    for problem in problems:
        faults.setdefault(problem.path, []).append(problem.message)
    for item in bad_lines:
        log(f"skipped {item}")
    kept = []
    for pair in pairs:
        why = [f"{f}: {m}" for f in (pair.composite, pair.mask, pair.real) for m in faults.get(f, [])]
        if why:
            log(f"skipped {pair.subset}/{pair.name}: {'; '.join(why)}")
        else:
            kept.append(pair)
    if len(kept) < len(pairs) + len(bad_lines):
        log(f"skipped {len(pairs) + len(bad_lines) - len(kept)} bad {split} item(s); kept {len(kept)} pairs")
    if not kept:
        raise DatasetError(f"{root}: no usable {split} pairs")
    return kept


def split_validation(cfg: TrainConfig, root: Path, pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(train, validation) pairs: --val-fraction of the real images held out (giftnet.pipeline.validation).
    The same on every rank and every resume; the validation pairs are never trained on."""
    train, val = carve_validation(pairs, cfg.val_fraction)
    if not train:
        raise DatasetError(
            f"{root}: --val-fraction {cfg.val_fraction:g} holds out every real image of the train list; lower it"
        )
    return train, val
