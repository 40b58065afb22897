"""NVIDIA DALI evaluation loader ("Fixed256"): whole images decoded by DALI and resized to a square.

A Python external source feeds, in order, each pair's encoded composite and real image (as
stored, or re-encoded losslessly where DALI would not decode them as giftnet.pipeline.images
does: read_bytes) and its mask decoded with PIL. With CUDA, DALI decodes the images on the GPU
and resizes images and mask bilinearly without antialiasing (within a grey level of OpenCV). On
the CPU DALI only decodes, and the DataLoader's own tail resizes as OpenCV does, bit for bit
(giftnet.pipeline.host_tail), so both backends give the same batches and the same metrics. The
graph helpers and the decode error mapping are giftnet.pipeline.dali_loader's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from giftnet.imagenet import normalise
from giftnet.pipeline import images
from giftnet.pipeline.augment import check_same_size, image_size, read_mask
from giftnet.pipeline.dali_loader import (
    MEAN_255_LIST,
    STD_255_LIST,
    InFlight,
    build_pipeline,
    decoder,
    require_dali,
    run_pipeline,
    to_chw,
    to_torch,
)
from giftnet.pipeline.host_tail import fixed_tensors
from giftnet.pipeline.pairs import Pair

try:
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath
    from nvidia.dali.pipeline import Pipeline
except ImportError:  # DaliEvalLoader raises require_dali's message
    pass


def read_bytes(path: Path) -> np.ndarray:
    """The encoded photo for DALI: as stored when DALI decodes it as giftnet.pipeline.images does, else
    decoded by giftnet.pipeline.images (EXIF rotation, 16-bit scaling, palette, CMYK, ...) and re-encoded
    losslessly, so both backends see the same pixels. Headers (pixel budget) are checked first."""
    return images.dali_bytes(path)


class _Feeder(InFlight):
    """The external source: one call per batch, in order, StopIteration after the last.

    Per-sample work (file reads, mask PNG decode, crop sampling) runs on a thread pool when there
    is one: PIL and file reads release the GIL. `pending` holds the batches handed to DALI and
    not yet returned by it (DALI prefetches), so a decode error can be traced to a file.
    """

    def __init__(
        self,
        batches: Sequence[np.ndarray],
        sample: Callable[[int], tuple[np.ndarray, ...]],
        pool: concurrent.futures.Executor | None = None,
    ) -> None:
        self._batches = iter(batches)
        self._sample = sample
        self._map = pool.map if pool is not None else map
        self.pending: collections.deque[np.ndarray] = collections.deque()

    def __call__(self) -> list[list[np.ndarray]]:
        batch = next(self._batches)
        self.pending.append(batch)
        samples = list(self._map(self._sample, (int(i) for i in batch)))
        return [list(col) for col in zip(*samples, strict=True)]


def _thread_pool(num_workers: int) -> concurrent.futures.ThreadPoolExecutor | None:
    return concurrent.futures.ThreadPoolExecutor(num_workers, "dali-feeder") if num_workers > 1 else None


class _PairFiles:
    """Reads a pair for the external source: JPEG bytes, decoded mask, sizes checked once per pair."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)
        self._checked: set[int] = set()

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        comp, real, mask = read_bytes(pair.composite), read_bytes(pair.real), read_mask(pair.mask)
        if index not in self._checked:
            sizes = (image_size(pair.composite, comp.tobytes()), mask.shape, image_size(pair.real, real.tobytes()))
            check_same_size((pair.composite, pair.mask, pair.real), sizes)
            self._checked.add(index)
        return comp, real, mask


def serve(
    build: Callable[[_Feeder], Pipeline],
    batches: Sequence[np.ndarray],
    sample: Callable[[int], tuple[np.ndarray, ...]],
    num_workers: int,
    pairs: Sequence[Pair],
    convert: Callable[[tuple], dict[str, torch.Tensor]],
) -> Iterator[dict[str, torch.Tensor]]:
    """Build a pipeline over `batches` and yield them converted; DALI's threads stop at the end."""
    pool = _thread_pool(num_workers)
    pipe = None
    try:
        feeder = _Feeder(batches, sample, pool)
        pipe = build(feeder)
        for _ in batches:
            yield convert(run_pipeline(pipe, feeder, pairs))
    finally:
        # Stop DALI's threads now: a Pipeline sits in reference cycles, so dropping it waits for the
        # garbage collector, and a DataLoader that forks meanwhile can deadlock on their locks.
        if pipe is not None:
            getattr(pipe, "_shutdown", lambda: None)()
        del pipe
        if pool is not None:
            pool.shutdown(cancel_futures=True)


class DaliEvalLoader:
    """Evaluation batches ("Fixed256") from a DALI pipeline; see loaders.make_eval_loader."""

    backend = "dali"

    def __init__(
        self, pairs: Sequence[Pair], *, batch_size: int, size: int, device: torch.device, num_workers: int
    ) -> None:
        require_dali()
        self.pairs = list(pairs)
        self._files = _PairFiles(self.pairs)
        self.batch_size, self.size, self.device, self.num_workers = batch_size, size, device, num_workers

    def __len__(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def _sample(self, index: int) -> tuple[np.ndarray, ...]:
        comp, real, mask = self._files(index)
        return comp, real, mask[:, :, None], np.array(index, dtype=np.int64)

    def _build(self, feeder: _Feeder) -> Pipeline:
        pipe = build_pipeline(self.batch_size, self.num_workers, self.device)
        decode = decoder(self.device, sliced=False)
        with pipe:
            comp, real, mask, index = fn.external_source(
                source=feeder, num_outputs=4, batch=True, layout=["", "", "HWC", ""]
            )
            if self.device.type != "cuda":
                # On the CPU DALI only decodes; _host_batch resizes as OpenCV does (as the DataLoader).
                pipe.set_outputs(decode(comp), decode(real), mask, index)
                pipe.build()
                return pipe
            # Bilinear without antialiasing, as iSSAM's cv2.INTER_LINEAR "Fixed256" resize.
            resize = functools.partial(fn.resize, size=[self.size, self.size], antialias=False)
            comp, real = (resize(decode(x)) for x in (comp, real))
            mask = mask.gpu()
            pipe.set_outputs(
                to_chw(comp, None, MEAN_255_LIST, STD_255_LIST),
                to_chw(dmath.clamp(resize(mask, dtype=types.FLOAT), 0.0, 255.0), None, std=(255.0,)),
                to_chw(comp),
                to_chw(real),
                index,
            )
        pipe.build()
        return pipe

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n, b = len(self.pairs), self.batch_size
        batches = [np.arange(s, min(s + b, n), dtype=np.int64) for s in range(0, n, b)]
        if not batches:
            return
        convert = self._convert if self.device.type == "cuda" else self._host_batch
        yield from serve(self._build, batches, self._sample, self.num_workers, self.pairs, convert)

    def _convert(self, outs: tuple) -> dict[str, torch.Tensor]:
        keys = ("composite", "mask", "composite_255", "real_255", "index")
        return {k: to_torch(o, self.device) for k, o in zip(keys, outs, strict=True)}

    def _host_batch(self, outs: tuple) -> dict[str, torch.Tensor]:
        """The CPU graph's decoded images -> a batch, resized by the DataLoader's own tail
        (giftnet.pipeline.host_tail.fixed_tensors: OpenCV's INTER_LINEAR, bit for bit)."""
        comp, real, mask, index = outs
        samples = [
            fixed_tensors(np.asarray(comp[i]), np.asarray(real[i]), np.asarray(mask[i]), self.size)
            for i in range(len(comp))
        ]
        comp_255, real_255 = (torch.stack([s[k] for s in samples]) for k in ("composite", "real"))
        return {
            "composite": normalise(comp_255),
            "mask": torch.stack([s["mask"] for s in samples]),
            "composite_255": comp_255.float(),
            "real_255": real_255.float(),
            "index": to_torch(index, self.device),
        }
