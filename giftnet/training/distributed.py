"""One code path for a single process and for torchrun: rank, world size, device, collectives.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) the process group is NCCL on
GPUs and gloo on the CPU; otherwise everything below degrades to the single-process case.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from giftnet.errors import UsageError
from giftnet.training.signals import StopRequested

POLL_SECONDS = 0.25  # how often a waiting rank looks for a signal


def init(device_kind: str = "auto") -> torch.device:
    """Join the process group if launched by torchrun; return this rank's device."""
    use_cuda = torch.cuda.is_available() if device_kind == "auto" else device_kind == "cuda"
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        device_id = device if use_cuda else None  # None: torch's default
        timeout = datetime.timedelta(minutes=30)
        store, rank_, world = attempt_store(timeout)
        dist.init_process_group(
            backend, store=store, rank=rank_, world_size=world, timeout=timeout, device_id=device_id
        )
    return device


def attempt_store(timeout: datetime.timedelta) -> tuple[dist.Store, int, int]:
    """torch's env:// rendezvous (MASTER_ADDR/PORT, RANK, WORLD_SIZE), its keys under this attempt.

    Under torchrun the workers connect to the elastic agent's TCP store, and that store lives as
    long as the agent: a restarted group finds every key the dead group wrote. gloo (and NCCL)
    bootstrap through fixed key names, so a restarted rank that came up before its peer read the
    dead peer's address and failed ("connectFullMesh ... Connection refused"), with static and
    c10d rendezvous alike (torch 2.13; torch's env:// handler assumes a fresh store per restart).
    A prefix per torchrun attempt gives every restart a key space of its own.
    """
    store, rank_, world = next(dist.rendezvous("env://", timeout=timeout))
    return dist.PrefixStore(f"giftnet/attempt{restart_count()}/", store), rank_, world


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted this worker group (0 on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def shutdown(ok: bool = True) -> None:
    """Leave the process group. After an error, leave without the final barrier: the other ranks
    may be inside another collective, and waiting for them would last until the timeout."""
    if not dist.is_initialized():
        return
    if not ok:
        # The process is about to exit; destroying a gloo group whose peer died can block forever
        # (seen when torchrun restarts a group after a SIGKILLed worker), so leave it to the exit.
        return
    dist.barrier()
    dist.destroy_process_group()


class Agreement:
    """Before each step the ranks agree whether all of them can go on, through the rendezvous
    store (host side: no device sync, so the normal path keeps `.item()` to the log interval).

    Every rank posts its status ("ok", "stop" for a signal, or "fail:MESSAGE" when it cannot make
    this step, e.g. an image failed to decode) and reads everybody's. So all ranks stop at the
    same step boundary, with the collectives still in lockstep, and rank 0 can save a checkpoint,
    instead of the healthy ranks waiting in the gradient all-reduce until the collective timeout.
    A single process agrees with itself at no cost.

    A rank waiting for its peers still notices a signal: `stopping()` is polled while it waits, and
    when peers stay silent for `grace` seconds after the signal (they died: torchrun then SIGTERMs
    the survivors and SIGKILLs them 30 s later) the rank stops at once with StopRequested, its last
    checkpoint current, instead of blocking in the store until the kill.
    """

    def __init__(
        self,
        tag: str,
        *,
        stopping: Callable[[], int | None] = lambda: None,  # the stop signal that arrived, if any
        grace: float = 10.0,
        store: dist.Store | None = None,
        ranks: tuple[int, int] | None = None,  # (rank, world size); default the process group's
    ) -> None:
        # The default store is this torchrun attempt's (see attempt_store): a restarted group
        # never reads the dead group's rounds.
        self.tag, self.round = tag, 0
        self.rank, self.world = ranks if ranks is not None else (rank(), world_size())
        self.store = store if store is not None else (_default_store() if self.world > 1 else None)
        self.stopping, self.grace = stopping, grace

    def __call__(self, status: str) -> list[str]:
        if self.store is None:
            return [status]
        keys = [f"giftnet/{self.tag}/{self.round}/{r}" for r in range(self.world)]
        self.store.set(keys[self.rank], status)
        self._wait(keys)
        statuses = [v.decode() for v in self.store.multi_get(keys)]
        if self.rank == 0 and self.round:  # every rank has read the previous round: it posted this one
            for r in range(self.world):
                self.store.delete_key(f"giftnet/{self.tag}/{self.round - 1}/{r}")
        self.round += 1
        return statuses

    def _wait(self, keys: list[str]) -> None:
        """store.wait, in a helper thread when the keys are not all there yet: a blocking wait in the
        main thread would hold off Python's signal handlers until the store's 30-minute timeout."""
        store = self.store
        assert store is not None
        if store.check(keys):
            return
        done, failure = threading.Event(), []

        def wait() -> None:
            try:
                store.wait(keys)
            except Exception as exc:  # re-raised in the main thread
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=wait, name="giftnet-agreement", daemon=True).start()
        signalled, signum = None, None
        while not done.wait(POLL_SECONDS):
            if signalled is None and (signum := self.stopping()) is not None:
                signalled = time.monotonic()
            if signalled is not None and time.monotonic() - signalled > self.grace:
                # (the store's client is busy with the waiting thread: nothing more is asked of it)
                raise StopRequested(
                    signum,
                    f"rank {self.rank}: a signal arrived while waiting for the other ranks, and they did not "
                    f"reach the next step within {self.grace:g} s; the last checkpoint is kept",
                )
        if failure:
            raise failure[0]


def _default_store() -> dist.Store:
    # The store torchrun's rendezvous created for the default group (host side, TCP).
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over ranks (a copy; `t` is untouched)."""
    if not dist.is_initialized():
        return t.clone()
    out = t.clone()
    dist.all_reduce(out)
    return out / world_size()


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of `t` over ranks (a copy)."""
    out = t.clone()
    if dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out
