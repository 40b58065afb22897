"""NVIDIA DALI training loader and the graph helpers its evaluation twin (giftnet.pipeline.dali_eval)
shares: JPEG decoding on the GPU (`device="mixed"`) with CUDA, on DALI's CPU threads without.

Design. Training: giftnet.pipeline.dali_feed.TrainFeed feeds each batch (in DALI worker processes, the
parallel external source, or in this process): the encoded composite and real bytes, the crop
window and flip drawn from the dataset index (giftnet.pipeline.index) without decoding the mask,
and the mask's window as pixels, cut from the index's runs (DALI decodes PNG on the host, and that
decode was a third of the CPU graph at 1024 px). DALI then decodes only the window of each photo
(fn.decoders.image_slice: ROI decoding). On the GPU it resizes the windows bilinearly without antialiasing
(cv2.INTER_LINEAR, as iSSAM), and mirrors, normalises and transposes it to CHW in one
fn.crop_mirror_normalize. On the CPU those operators cost more than the decoding (4.6 against
3.2 ms per pair at 640 px), so the graph stops at the windows and the DataLoader's own tail
(giftnet.pipeline.host_tail: torch's uint8 resize, about 1.5 ms) finishes each sample in a thread
pool, one batch ahead (giftnet.pipeline.dali_host): the batches are then the DataLoader's, bit for bit.
Evaluation (giftnet.pipeline.dali_eval): a Python external source feeds the bytes and the mask
decoded with PIL. DALI's own readers and random operators are not used: the crop depends on the
mask and must be a pure function of (seed, epoch, pair index) so that both backends agree and a
resumed run replays exactly. A pipeline is built per epoch() call (~50 ms) over just the batches
asked for, so resuming at a batch decodes nothing before it.

Decoding policy: giftnet.pipeline.images, the package's one decoder, decides per file (from its header)
whether DALI may decode the stored bytes (plain 8-bit RGB/gray JPEG and PNG without EXIF rotation:
DALI gives Pillow's pixels) or gets the file decoded by giftnet.pipeline.images and re-encoded losslessly
(EXIF-rotated, 16-bit, palette, CMYK, alpha, other formats), so both backends see the same pixels.

Decode failures surface as DatasetError naming the file: bytes are read and their headers checked
in the external source, and a DALI decode error is mapped back to the file by re-decoding the
in-flight batches with PIL.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from giftnet.imagenet import MEAN_255, STD_255
from giftnet.pipeline import images
from giftnet.pipeline.augment import (
    ShardPlan,
)
from giftnet.pipeline.dali_feed import LAYOUTS, NUM_OUTPUTS, TrainFeed
from giftnet.pipeline.dali_host import one_ahead, start_train_batch, tail_pool
from giftnet.pipeline.index import index_pairs
from giftnet.pipeline.pairs import DatasetError, Pair

try:
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath
    from nvidia.dali.backend import TensorListGPU
    from nvidia.dali.pipeline import Pipeline

    DALI_IMPORT_ERROR: str | None = None
except ImportError as _e:  # the trainer falls back to giftnet.pipeline.torch_loader
    DALI_IMPORT_ERROR = str(_e)

MEAN_255_LIST, STD_255_LIST = list(MEAN_255), list(STD_255)


def require_dali() -> None:
    """Raise a clear error if DALI cannot be imported."""
    if DALI_IMPORT_ERROR is not None:
        raise RuntimeError(
            f"backend='dali' needs NVIDIA DALI (pip install nvidia-dali-cuda120): {DALI_IMPORT_ERROR}; "
            "use backend='torch' or 'auto'"
        )


def device_id(device: torch.device) -> int | None:
    """DALI's device_id: the CUDA device for GPU decoding, None for a CPU-only pipeline."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def to_torch(tl: Any, device: torch.device) -> torch.Tensor:
    """Copy a dense DALI TensorList into a new torch tensor on `device`."""
    t = tl.as_tensor()
    if isinstance(tl, TensorListGPU):
        dtype = torch.int64 if t.dtype == types.INT64 else torch.float32
        out = torch.empty(t.shape(), dtype=dtype, device=device)
        from nvidia.dali.plugin.pytorch import feed_ndarray

        feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(device))
        return out
    return torch.from_numpy(np.array(t)).to(device, non_blocking=True)


@dataclasses.dataclass
class InFlight:
    """The batches DALI may have in flight, for naming a file it cannot decode (what run_pipeline reads)."""

    pending: collections.deque[np.ndarray]


def run_pipeline(pipe: Pipeline, feeder: InFlight, pairs: Sequence[Pair]) -> tuple:
    """pipe.run(), with a decode failure named by file (DatasetError); the oldest in-flight batch retired."""
    try:
        outs = pipe.run()
    except RuntimeError as e:
        culprit = find_undecodable(pairs, feeder.pending)
        if culprit is not None:
            raise culprit from None
        if "decod" in str(e).lower() or "nvimagecodec" in str(e).lower():
            files = [str(f) for b in feeder.pending for i in b for f in (pairs[i].composite, pairs[i].real)]
            raise DatasetError(f"DALI could not decode one of: {', '.join(files)}") from e
        raise
    feeder.pending.popleft()
    return outs


def find_undecodable(pairs: Sequence[Pair], batches: Sequence[np.ndarray]) -> DatasetError | None:
    """Re-decode the in-flight files with PIL; the first failure names the file DALI choked on."""
    for batch in batches:
        for i in batch:
            for path in (pairs[i].composite, pairs[i].real):
                try:
                    images.read_rgb(path)
                except DatasetError as e:
                    return e
    return None


def build_pipeline(batch_size: int, num_workers: int, device: torch.device, **extra: object) -> Pipeline:
    return Pipeline(
        batch_size=batch_size,
        num_threads=max(1, num_workers),
        device_id=device_id(device),
        **({"prefetch_queue_depth": 2} | extra),
    )


def decoder(device: torch.device, sliced: bool) -> Callable:
    op = fn.decoders.image_slice if sliced else fn.decoders.image
    kwargs = {"normalized_anchor": False, "normalized_shape": False} if sliced else {}
    # Fancy upsampling: the same pixels as Pillow. Raw orientation: a file with an EXIF rotation
    # reaches DALI already decoded, rotated and re-encoded by giftnet.pipeline.dali_eval.read_bytes or
    # the index-driven feed (so on the GPU too).
    return functools.partial(
        op,
        device="mixed" if device.type == "cuda" else "cpu",
        output_type=types.RGB,
        jpeg_fancy_upsampling=True,
        adjust_orientation=False,
        **kwargs,
    )


def to_chw(x: object, mirror: object = None, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> object:
    return fn.crop_mirror_normalize(
        x,
        mirror=0 if mirror is None else mirror,
        mean=list(mean),
        std=list(std),
        dtype=types.FLOAT,
        output_layout="CHW",
    )


def default_feed_processes(device: torch.device, num_workers: int) -> int:
    """DALI worker processes for the feeder: 1 when the GPU decodes and num_workers >= 2, else 0.

    Decoding on the CPU, DALI's num_workers threads use every core given; a feeder process would
    take CPU from them (about 0.1-0.2 ms per pair, against 5-15 ms of decoding) and add a copy of
    every batch through shared memory and a process start per epoch. In this process the feeder
    runs while the caller waits for DALI's outputs anyway. With the GPU decoding, the feeder is
    most of the CPU's work and goes to its own process, off the training loop's thread.
    """
    return 1 if device.type == "cuda" and num_workers >= 2 else 0


class DaliTrainLoader:
    """Training batches from a DALI pipeline; see loaders.make_train_loader.

    Fed by giftnet.pipeline.dali_feed.TrainFeed from the dataset index (giftnet.pipeline.index, built or refreshed
    here): `feed_processes` DALI worker processes run it (the parallel external source), 0 runs it
    in this process. The default (default_feed_processes) is one process when the GPU decodes and
    num_workers >= 2, which keeps the feeder off the training loop's thread (one feeder process
    keeps up with dozens of cores); none when the CPU decodes, where every core is a decode core.
    """

    backend = "dali"

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
        feed_processes: int | None = None,
    ) -> None:
        require_dali()
        self.pairs = list(pairs)
        self.index = index_pairs(self.pairs)
        self.batch_size, self.crop_size, self.seed = batch_size, crop_size, seed
        self.num_workers, self.device = num_workers, device
        self.feed_processes = default_feed_processes(device, num_workers) if feed_processes is None else feed_processes
        self.plan = ShardPlan(len(self.pairs), batch_size, seed, rank, world_size, drop_last)

    def __len__(self) -> int:
        return len(self.plan)

    def feed(self, epoch: int, batches: Sequence[np.ndarray]) -> TrainFeed:
        """The external source for `batches` of `epoch` (also what giftnet.bench.data times alone)."""
        return TrainFeed(self.pairs, self.index.masks, runs=self.index.runs, native=self.index.native,
                         crop_size=self.crop_size, seed=self.seed, epoch=epoch, batches=batches)  # fmt: skip

    def _define(self, feed: TrainFeed) -> Pipeline:
        """The graph, defined but not built (DALI's definition-time checks run here)."""
        parallel = self.feed_processes > 0
        extra = {}
        if parallel:
            # fork is cheap but unsafe once CUDA is initialised; spawn pickles the feed instead.
            method = "spawn" if self.device.type == "cuda" else "fork"
            depth = max(2, self.feed_processes)
            extra = {"py_num_workers": self.feed_processes, "py_start_method": method, "prefetch_queue_depth": depth}
        pipe = build_pipeline(self.batch_size, self.num_workers, self.device, **extra)
        decode = decoder(self.device, sliced=True)
        with pipe:
            comp, real, mask, anchor, shape, flip, index = fn.external_source(
                source=feed, num_outputs=NUM_OUTPUTS, batch=True, batch_info=True, parallel=parallel, layout=LAYOUTS
            )
            if self.device.type != "cuda":
                # On the CPU the graph only decodes the windows; dali_host's tail resizes and mirrors them.
                pipe.set_outputs(decode(comp, anchor, shape), decode(real, anchor, shape), mask, flip, index)
                return pipe
            # Bilinear without antialiasing: cv2.INTER_LINEAR, as iSSAM's RandomResizedCrop.
            resize = functools.partial(fn.resize, size=[self.crop_size, self.crop_size], antialias=False)
            comp, real = (resize(decode(x, anchor, shape)) for x in (comp, real))
            # The mask's window comes as pixels (the feeder cuts it from the runs): to the GPU to be resized.
            mask = dmath.clamp(resize(mask.gpu(), dtype=types.FLOAT), 0.0, 255.0)  # filter round-off
            pipe.set_outputs(
                to_chw(comp, flip, MEAN_255_LIST, STD_255_LIST),
                to_chw(real, flip, MEAN_255_LIST, STD_255_LIST),
                to_chw(mask, flip, std=(255.0,)),
                index,
            )
        return pipe

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of `epoch` on this rank from `start_batch` on; skipped batches are not decoded."""
        batches = self.plan.batches(epoch, start_batch)
        if not batches:
            return
        pipe = self._define(self.feed(epoch, batches))
        pool = tail_pool(self.num_workers) if self.device.type != "cuda" else None
        try:
            pipe.build()
            runs = (
                run_fed(pipe, InFlight(collections.deque(batches[k : k + 3])), self.pairs) for k in range(len(batches))
            )
            if pool is None:
                yield from (self._convert(outs) for outs in runs)
            else:  # the CPU graph's windows: the tail in `pool`, one batch ahead (giftnet.pipeline.dali_host)
                yield from one_ahead(start_train_batch(outs, self.crop_size, pool) for outs in runs)
        finally:
            if pool is not None:  # its tasks read DALI's buffers: they finish before the pipeline stops
                pool.shutdown(wait=True, cancel_futures=True)
            getattr(pipe, "_shutdown", lambda: None)()  # stop DALI's threads and workers now (see dali_eval.serve)
            del pipe

    def _convert(self, outs: tuple) -> dict[str, torch.Tensor]:
        keys = ("composite", "real", "mask", "index")
        return {k: to_torch(o, self.device) for k, o in zip(keys, outs, strict=True)}


_WORKER_ERROR = f"{DatasetError.__module__}.{DatasetError.__qualname__}: "


def run_fed(pipe: Pipeline, inflight: InFlight, pairs: Sequence[Pair]) -> tuple:
    """_run, also turning a DatasetError raised in a DALI worker process back into one."""
    try:
        return run_pipeline(pipe, inflight, pairs)
    except Exception as e:  # DALI re-raises a worker's exception as a bare Exception with its traceback
        text = str(e)
        if type(e) is Exception and _WORKER_ERROR in text:
            raise DatasetError(text.split(_WORKER_ERROR)[-1].strip().splitlines()[0]) from None
        raise
