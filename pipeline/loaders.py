"""The trainer's front to the data: training and evaluation loaders, DALI or plain PyTorch.

Both backends take the same `list[Pair]`, draw the same crops (giftnet.pipeline.augment) and yield the
same dicts of torch tensors on the training device, so a run can move between them. "auto"
picks DALI when it imports, else PyTorch (our GPU test machine has no DALI).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import torch

from giftnet.choices import BACKENDS
from giftnet.errors import ConfigError
from giftnet.messages import first_n
from giftnet.pipeline import dali_loader
from giftnet.pipeline.dali_eval import DaliEvalLoader
from giftnet.pipeline.dali_loader import DaliTrainLoader
from giftnet.pipeline.pairs import DatasetError, Pair
from giftnet.pipeline.torch_loader import TorchEvalLoader, TorchTrainLoader

CPU = torch.device("cpu")


class TrainLoader(Protocol):
    """What make_train_loader returns."""

    backend: str

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        ...

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of `epoch` from `start_batch` on: "composite", "real", "mask", "index"."""
        ...


def resolve_backend(backend: str) -> str:
    """ "auto" -> "dali" when DALI imports, else "torch"; "dali" without DALI is an error."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "torch" if dali_loader.DALI_IMPORT_ERROR is not None else "dali"
    if backend == "dali":
        dali_loader.require_dali()
    return backend


def check_files(pairs: Sequence[Pair]) -> None:
    """Refuse to start on missing files: a DatasetError listing the first few and the count."""
    if not pairs:
        raise DatasetError("the pair list is empty")
    missing = [str(p) for pair in pairs for p in (pair.composite, pair.mask, pair.real) if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} dataset files are missing:\n  {first_n(missing, 10)}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def make_train_loader(
    pairs: Sequence[Pair],
    *,
    batch_size: int,
    crop_size: int = 256,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    device: torch.device = CPU,
    backend: str = "auto",
    drop_last: bool = True,
    feed_processes: int | None = None,
) -> TrainLoader:
    """Training loader: RandomResizedCrop (scale 0.5-1, ratio 3/4-4/3) to crop_size, flip, keep-background.

    Batches: "composite" and "real" (B, 3, S, S) float32 normalised with the ImageNet mean/std,
    "mask" (B, 1, S, S) float32 in [0, 1], "index" (B,) int64 positions in `pairs`. Rank `rank`
    of `world_size` gets a disjoint, equally long shard of each epoch's shuffled order. Output is
    a pure function of (pairs, seed, epoch, rank, world_size, batch_size, crop_size), so
    epoch(e, start_batch=k) yields exactly the batches k, k+1, ... of epoch(e).
    DALI only: `feed_processes` worker processes run its feeder (0: in this process; default one
    when the GPU decodes and num_workers >= 2, none when the CPU decodes: see
    dali_loader.default_feed_processes); the dataset index (giftnet.pipeline.index) is built or refreshed first.
    """
    _check_positive(batch_size=batch_size, crop_size=crop_size, world_size=world_size)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    check_files(pairs)
    if len(pairs) < world_size:
        raise ValueError(f"{len(pairs)} pairs cannot be sharded over world_size={world_size} ranks")
    if feed_processes is not None and feed_processes < 0:
        raise ValueError(f"feed_processes must be >= 0, got {feed_processes}")
    dali = resolve_backend(backend) == "dali"
    cls = DaliTrainLoader if dali else TorchTrainLoader
    loader = cls(
        pairs,
        batch_size=batch_size,
        crop_size=crop_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        device=torch.device(device),
        drop_last=drop_last,
        **({"feed_processes": feed_processes} if dali else {}),
    )
    if len(loader) == 0:
        raise ConfigError(
            f"--batch-size: batch_size={batch_size} exceeds this rank's {len(pairs) // world_size} pairs with drop_last=True"
        )
    return loader


def make_eval_loader(
    pairs: Sequence[Pair],
    *,
    batch_size: int,
    size: int = 256,
    device: torch.device = CPU,
    backend: str = "auto",
    num_workers: int = 2,
) -> Iterable[dict[str, torch.Tensor]]:
    """Evaluation loader ("Fixed256"): every pair in order, last partial batch kept, no augmentation.

    Images and mask are resized to size x size bilinearly without antialiasing (iSSAM resizes
    with cv2.INTER_LINEAR), images rounded to 0-255 integers as iSSAM's uint8 pipeline does.
    Batches: "composite" (B, 3, S, S) normalised, "mask" (B, 1, S, S) in [0, 1] with soft edges,
    "composite_255" and "real_255" (B, 3, S, S) float 0-255 (the metric inputs), "index" (B,).
    """
    _check_positive(batch_size=batch_size, size=size)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    check_files(pairs)
    cls = DaliEvalLoader if resolve_backend(backend) == "dali" else TorchEvalLoader
    return cls(pairs, batch_size=batch_size, size=size, device=torch.device(device), num_workers=num_workers)
