"""One code path for a single process and for torchrun: rank, world size, device, collectives.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) the process group is NCCL on
GPUs and gloo on the CPU; otherwise everything below degrades to the single-process case.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init(device_kind: str = "auto") -> torch.device:
    """Join the process group if launched by torchrun; return this rank's device."""
    use_cuda = torch.cuda.is_available() if device_kind == "auto" else device_kind == "cuda"
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs = {"device_id": device} if use_cuda else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return device


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted this worker group (0 on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (used for stop requests)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
