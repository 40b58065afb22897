"""Training checkpoints in safetensors: model, optimizer, grad scaler, progress and RNG states.

Everything is a tensor; the configs and a little bookkeeping are string metadata. Nothing is
unpickled on load. The file rules (names, latest, pruning, atomic writes) are the run folder's
(giftnet.training.runfolder). The format is versioned: VERSION 2 adds `evaluated` to the progress;
version 1 files (no version field, written before evaluation was part of the checkpoint) are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from giftnet.fileio import atomic_write_bytes
from giftnet.model import GiftNet
from giftnet.training.runfolder import STAGE_ORDER
from giftnet.weights import WeightsError, load_state_checked

FORMAT = "giftnet-checkpoint"
VERSION = 2
_PROGRESS_LEN = {1: 4, 2: 5}


@dataclass
class Progress:
    """Where a stage is: the next batch to run is (epoch, batch); `step` optimizer steps so far;
    `best` the best validation MSE so far; `evaluated` the step of the last finished evaluation (-1: none)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    bad_steps: int = 0
    best: float = float("inf")
    evaluated: int = -1

    def tensor(self) -> torch.Tensor:
        return torch.tensor([self.epoch, self.batch, self.step, self.bad_steps, self.evaluated], dtype=torch.int64)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, scalars = {}, {}
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            name = f"optim.{pid}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = type(value).__name__
                tensors[name] = torch.tensor(float(value), dtype=torch.float64)
    return tensors, scalars


def checkpoint_bytes(
    *,
    stage: str,
    model: GiftNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    train_config: dict[str, Any],
) -> bytes:
    """The checkpoint file's bytes (the run folder writes them atomically)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_scalars = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors.update(
        {
            f"scaler.{k}": torch.as_tensor(v).detach().cpu().reshape(-1)
            for k, v in scaler.state_dict().items()
            if isinstance(v, (int, float, torch.Tensor))
        }
    )
    tensors["progress"] = progress.tensor()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "stage": stage,
        "best": repr(progress.best),
        "optimizer_scalars": json.dumps(opt_scalars),
        "train_config": json.dumps(train_config, sort_keys=True),
        # The architecture of the model saved (the teacher's is the plain backbone of the same width).
        "model_config": json.dumps(model.config.to_dict()),
    }
    return save(tensors, metadata=metadata)


def save_checkpoint(path: Path, **parts: Any) -> None:
    """`checkpoint_bytes` written atomically to `path` (outside a run folder: tools and tests)."""
    atomic_write_bytes(path, checkpoint_bytes(**parts))


def read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a GiftNet training checkpoint (format={meta.get('format')!r})")
    version = meta.get("version", "1")
    if version not in {str(v) for v in _PROGRESS_LEN}:
        raise WeightsError(
            f"{path}: checkpoint format version {version!r} is not one this engine reads "
            f"(it reads {sorted(_PROGRESS_LEN)}); it was written by another version of GiftNet"
        )
    return meta


def _version(meta: dict[str, str]) -> int:
    return int(meta.get("version", "1"))


def _progress(counters: list[int], version: int, best: float) -> Progress:
    if version == 1:  # written at epoch end before the evaluation, which then counted as done
        counters = [*counters, counters[2]]
    epoch, batch, step, bad, evaluated = (int(v) for v in counters)
    return Progress(epoch, batch, step, bad, best, evaluated)


def read_progress(path: Path) -> tuple[str, Progress]:
    """(stage, progress) of a checkpoint, without loading its model."""
    meta = read_metadata(path)
    try:
        best = float(meta["best"])
        with safe_open(str(path), framework="pt") as f:
            t = _checked(path, f, "progress", shape=(_PROGRESS_LEN[_version(meta)],), dtype=torch.int64)
    except (KeyError, ValueError) as exc:  # the user's file: name it
        raise WeightsError(f"{path}: damaged checkpoint metadata ({exc!r})") from None
    except SafetensorError as exc:
        raise WeightsError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("stage") not in STAGE_ORDER:
        raise WeightsError(f"{path}: damaged checkpoint metadata (stage {meta.get('stage')!r})")
    return meta["stage"], _progress(t.tolist(), _version(meta), best)


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> Progress:
    """Restore everything `checkpoint_bytes` wrote; the caller checked the architecture.

    Every tensor is checked before anything is restored: names, dtypes and shapes must be what
    this model, optimizer and scaler hold, else WeightsError naming the file and the tensor.
    """
    meta = read_metadata(path)
    try:
        scalars = json.loads(meta["optimizer_scalars"])
        best = float(meta["best"])
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: damaged checkpoint metadata ({exc!r})") from None
    if not isinstance(scalars, dict) or not set(scalars.values()) <= {"int", "float"}:
        raise WeightsError(f"{path}: damaged checkpoint metadata (optimizer_scalars)")
    model_state = load_state_checked(path, model.state_dict(), prefix="model.")
    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            scaler_state = scaler.state_dict()
            unknown = sorted(n for n in names if not _known_name(n, scaler_state))
            if unknown:
                raise WeightsError(f"{path}: unexpected tensors in the checkpoint: {unknown[:5]}")
            opt_state = _optimizer_state(path, f, names, scalars, optimizer)
            for key in scaler_state:
                if f"scaler.{key}" in names:
                    value = _checked(path, f, f"scaler.{key}", shape=(1,), floating=None)
                    scaler_state[key] = (
                        value if torch.is_tensor(scaler_state[key]) else type(scaler_state[key])(value.item())
                    )
            rng = _checked(path, f, "rng.torch", shape=tuple(torch.get_rng_state().shape), dtype=torch.uint8)
            cuda_rng = [_checked(path, f, n, dtype=torch.uint8) for n in sorted(names) if n.startswith("rng.cuda.")]
            counters = _checked(path, f, "progress", shape=(_PROGRESS_LEN[_version(meta)],), dtype=torch.int64).tolist()
    except SafetensorError as exc:
        raise WeightsError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if min(counters[:4]) < 0:
        raise WeightsError(f"{path}: damaged checkpoint (negative progress {counters})")
    model.load_state_dict(model_state)
    optimizer.load_state_dict({"state": opt_state, "param_groups": optimizer.state_dict()["param_groups"]})
    if scaler_state:
        scaler.load_state_dict(scaler_state)
    torch.set_rng_state(rng)
    if cuda_rng and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    return _progress(counters, _version(meta), best)


def _known_name(name: str, scaler_state: dict[str, Any]) -> bool:
    head, _, rest = name.partition(".")
    if head in ("model", "optim"):
        return True  # checked against the model and the optimizer
    if head == "scaler":
        return rest in scaler_state
    return name in ("progress", "rng.torch") or (name.startswith("rng.cuda.") and name[9:].isdigit())


def _checked(
    path: Path,
    f: Any,
    name: str,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    floating: bool | None = None,
) -> torch.Tensor:
    """Tensor `name` of an open checkpoint, refused unless it has the given shape and dtype."""
    if name not in f.keys():  # noqa: SIM118 (not a dict)
        raise WeightsError(f"{path}: the checkpoint has no tensor {name!r}")
    t = f.get_tensor(name)
    if shape is not None and tuple(t.shape) != shape:
        raise WeightsError(f"{path}: {name} has shape {tuple(t.shape)}, expected {shape}")
    if (dtype is not None and t.dtype != dtype) or (floating is not None and t.is_floating_point() != floating):
        raise WeightsError(f"{path}: {name} has dtype {t.dtype}, expected {dtype or 'a float'}")
    return t


def _optimizer_state(
    path: Path, f: Any, names: set[str], scalars: dict[str, str], optimizer: torch.optim.Optimizer
) -> dict[int, dict[str, Any]]:
    """The optimizer's per-parameter state: each tensor a float scalar or of its parameter's shape."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for name in sorted(names):
        if not name.startswith("optim."):
            continue
        _, pid, key = [*name.split(".", 2), "", ""][:3]
        if not pid.isdigit() or int(pid) >= len(params) or not key:
            raise WeightsError(f"{path}: optimizer tensor {name!r} does not belong to this model's optimizer")
        value = _checked(path, f, name, floating=True)
        if value.dim() != 0 and value.shape != params[int(pid)].shape:
            raise WeightsError(
                f"{path}: {name} has shape {tuple(value.shape)}, expected () or {tuple(params[int(pid)].shape)}"
            )
        entry: torch.Tensor | int | float = value
        if name in scalars:
            entry = int(value.item()) if scalars[name] == "int" else float(value.item())
        state.setdefault(int(pid), {})[key] = entry
    return state
