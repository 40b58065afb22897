"""Plain PyTorch loaders (DataLoader worker processes + giftnet.pipeline.images, the one decoder).

The data benchmark's baseline, and the trainer's fallback where DALI is not installed. Crops and
flips come from giftnet.pipeline.augment and the resize from giftnet.pipeline.host_tail, so this
backend yields the same batches as CPU-only DALI, bit for bit (and, on the GPU, the same crops up to
nvJPEG's and DALI's resampling rounding). Workers send uint8 images; normalisation happens on the
training device, which keeps the inter-process and host-to-device copies four times smaller.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from giftnet.imagenet import normalise
from giftnet.pipeline.augment import (
    ShardPlan,
    check_same_size,
    read_mask,
    sample_crop,
)
from giftnet.pipeline.host_tail import crop_tensors, fixed_tensors
from giftnet.pipeline.images import read_rgb
from giftnet.pipeline.pairs import DatasetError, Pair

_DATASET_ERROR_PREFIX = f"{DatasetError.__module__}.{DatasetError.__qualname__}: "


class TrainSet(Dataset):
    """Pair `index` of `epoch`, cropped and flipped as giftnet.pipeline.augment dictates (uint8 images)."""

    def __init__(self, pairs: Sequence[Pair], *, crop_size: int, seed: int) -> None:
        self.pairs = list(pairs)
        self.crop_size = crop_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        pair = self.pairs[index]
        size = self.crop_size
        mask = read_mask(pair.mask)
        comp, real = read_rgb(pair.composite), read_rgb(pair.real)
        check_same_size((pair.composite, pair.mask, pair.real), (comp.shape[:2], mask.shape, real.shape[:2]))
        p = sample_crop(mask, crop_size=size, seed=self.seed, epoch=epoch, index=index)
        rows, cols = slice(p.top, p.top + p.height), slice(p.left, p.left + p.width)
        out = crop_tensors(comp[rows, cols], real[rows, cols], mask[rows, cols], size, p.flip)
        return out | {"index": torch.tensor(index, dtype=torch.int64)}


class EvalSet(Dataset):
    """Pair `index` resized to size x size ("Fixed256"): uint8 images, soft float mask."""

    def __init__(self, pairs: Sequence[Pair], *, size: int) -> None:
        self.pairs = list(pairs)
        self.size = size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = self.pairs[index]
        mask = read_mask(pair.mask)
        comp, real = read_rgb(pair.composite), read_rgb(pair.real)
        check_same_size((pair.composite, pair.mask, pair.real), (comp.shape[:2], mask.shape, real.shape[:2]))
        # OpenCV's fixed-point INTER_LINEAR, bit for bit, as iSSAM's evaluation resizes images.
        return fixed_tensors(comp, real, mask, self.size) | {"index": torch.tensor(index, dtype=torch.int64)}


def _iterate(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """Iterate a DataLoader, re-raising a worker's DatasetError with its own message only.

    The worker processes are shut down before the error leaves, so that no traceback keeps
    them alive (torch would otherwise wait seconds for them when it collects the iterator).
    """
    batches = iter(loader)
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except DatasetError as e:
                message = str(e).strip().splitlines()[-1].removeprefix(_DATASET_ERROR_PREFIX)
                break
            yield batch
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
    raise DatasetError(message)


class TorchTrainLoader:
    """Training batches from a DataLoader with `num_workers` processes; see loaders.make_train_loader."""

    backend = "torch"

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        batch_size: int,
        crop_size: int,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int,
        device: torch.device,
        drop_last: bool,
    ) -> None:
        self.dataset = TrainSet(pairs, crop_size=crop_size, seed=seed)
        self.num_workers, self.device = num_workers, device
        self.plan = ShardPlan(len(self.dataset), batch_size, seed, rank, world_size, drop_last)

    def __len__(self) -> int:
        return len(self.plan)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of `epoch` on this rank from `start_batch` on; skipped batches are not decoded."""
        batches = self.plan.batches(epoch, start_batch)
        if not batches:
            return
        keys = [[(int(i), epoch) for i in b] for b in batches]
        loader = DataLoader(
            self.dataset,
            batch_sampler=keys,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in _iterate(loader):
            yield {
                "composite": normalise(batch["composite"].to(self.device, non_blocking=True)),
                "real": normalise(batch["real"].to(self.device, non_blocking=True)),
                "mask": batch["mask"].to(self.device, non_blocking=True),
                "index": batch["index"].to(self.device, non_blocking=True),
            }


class TorchEvalLoader:
    """Evaluation batches in order, last partial batch kept; see loaders.make_eval_loader."""

    backend = "torch"

    def __init__(
        self, pairs: Sequence[Pair], *, batch_size: int, size: int, device: torch.device, num_workers: int
    ) -> None:
        self.dataset = EvalSet(pairs, size=size)
        self.batch_size, self.device, self.num_workers = batch_size, device, num_workers

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in _iterate(loader):
            comp = batch["composite"].to(self.device, non_blocking=True)
            real = batch["real"].to(self.device, non_blocking=True)
            yield {
                "composite": normalise(comp),
                "mask": batch["mask"].to(self.device, non_blocking=True),
                "composite_255": comp.float(),
                "real_255": real.float(),
                "index": batch["index"].to(self.device, non_blocking=True),
            }
