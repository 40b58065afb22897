"""CPU-only DALI's host tail for training: the graph's decoded windows -> batches, in a thread pool,
one batch ahead of the consumer.

On the CPU the DALI graph stops at the decoded windows (giftnet.pipeline.dali_loader says why), and
giftnet.pipeline.host_tail's crop_tensors (torch's uint8 resize and the mirror) plus the
normalisation finish each sample: 1-2 ms per pair at 640 px. Run one sample after another in the
loader's thread, that tail was a serial stage: it capped the loader at about 1 / (tail time) pairs/s
whatever the core count, ran between the trainer's steps instead of beside them, and with torch's
intra-op threads left on (as train.py leaves them) their OpenMP spinning took the cores from
DALI's threads: 190-242 pairs/s against 288-346 for this pool, two cores, 640 px. torch's kernels release
the GIL, so a pool of Python threads runs samples in parallel.

DALI reuses its output buffers at the next run(), so a batch's tail must finish before the
pipeline runs again: `one_ahead` starts the tail of batch k, hands batch k-1 to the consumer
meanwhile, and only then asks DALI for batch k+1.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from giftnet.imagenet import normalise_into
from giftnet.pipeline.host_tail import crop_tensors


def tail_pool(num_workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The tail's threads: as many as DALI's (num_workers, at least one)."""
    return concurrent.futures.ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="giftnet-tail")


@dataclasses.dataclass
class Pending:
    """A batch whose samples the pool is still writing."""

    batch: dict[str, torch.Tensor]
    futures: list[concurrent.futures.Future]

    def result(self) -> dict[str, torch.Tensor]:
        """The batch once every sample is in (re-raising a sample's error)."""
        for f in self.futures:
            f.result()
        return self.batch


def start_train_batch(outs: tuple, crop_size: int, pool: concurrent.futures.Executor) -> Pending:
    """Start the tail of one batch of the CPU training graph (composite, real and mask windows, flips, indices).

    Each sample is resized, mirrored and normalised straight into its slot of the batch: the same
    values as crop_tensors, torch.stack and normalise over the batch (the DataLoader's), bit for bit.
    """
    comp, real, mask, flip, index = outs
    flips = np.asarray(flip.as_tensor()).reshape(-1)
    n, s = len(flips), crop_size
    batch = {
        "composite": torch.empty(n, 3, s, s),
        "real": torch.empty(n, 3, s, s),
        "mask": torch.empty(n, 1, s, s),
        "index": torch.from_numpy(np.array(index.as_tensor()).reshape(-1)),
    }

    def one(i: int) -> None:
        crop = crop_tensors(np.asarray(comp[i]), np.asarray(real[i]), np.asarray(mask[i]), s, bool(flips[i]))
        normalise_into(crop["composite"], batch["composite"][i])
        normalise_into(crop["real"], batch["real"][i])
        batch["mask"][i].copy_(crop["mask"])

    return Pending(batch, [pool.submit(one, i) for i in range(n)])


def one_ahead(starts: Iterable[Pending]) -> Iterator[dict[str, torch.Tensor]]:
    """Batches from `starts` (each item a started Pending), the next started before the last is handed on.

    The next item is drawn (the pipeline run again) only after the current one's tail has finished.
    """
    ready: dict[str, torch.Tensor] | None = None
    for pending in starts:
        if ready is not None:
            yield ready
        ready = pending.result()
    if ready is not None:
        yield ready
