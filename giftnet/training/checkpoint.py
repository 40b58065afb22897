"""Training checkpoints in safetensors: model, optimizer, grad scaler, progress and RNG states.

Everything is a tensor; the configs and a little bookkeeping are string metadata. Files are
written atomically (temporary file, fsync, rename) and never unpickled on load. The run folder
keeps the last `keep_last` checkpoints of each stage and the best one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from giftnet.fileio import atomic_write_bytes
from giftnet.model import GiftNet
from giftnet.weights import WeightsError, load_state_checked

FORMAT = "giftnet-checkpoint"
STAGE_ORDER = ("reconstruction", "harmonization")
_NAME = re.compile(r"^ckpt-(reconstruction|harmonization)-(\d{9})\.safetensors$")


@dataclass
class Progress:
    """Where a stage is: the next batch to run is (epoch, batch); `step` optimizer steps so far."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    bad_steps: int = 0
    best: float = float("inf")

    def tensor(self) -> torch.Tensor:
        return torch.tensor([self.epoch, self.batch, self.step, self.bad_steps], dtype=torch.int64)


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


def save_checkpoint(
    path: Path,
    *,
    stage: str,
    model: GiftNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    train_config: dict[str, Any],
) -> None:
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
        "stage": stage,
        "best": repr(progress.best),
        "optimizer_scalars": json.dumps(opt_scalars),
        "train_config": json.dumps(train_config, sort_keys=True),
        # The architecture of the model saved (the teacher's is the plain backbone of the same width).
        "model_config": json.dumps(model.config.to_dict()),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a GiftNet training checkpoint (format={meta.get('format')!r})")
    return meta


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> Progress:
    """Restore everything `save_checkpoint` wrote; the caller checked the architecture.

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
            counters = _checked(path, f, "progress", shape=(4,), dtype=torch.int64).tolist()
    except SafetensorError as exc:
        raise WeightsError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if min(counters) < 0:
        raise WeightsError(f"{path}: damaged checkpoint (negative progress {counters})")
    model.load_state_dict(model_state)
    optimizer.load_state_dict({"state": opt_state, "param_groups": optimizer.state_dict()["param_groups"]})
    if scaler_state:
        scaler.load_state_dict(scaler_state)
    torch.set_rng_state(rng)
    if cuda_rng and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    epoch, batch, step, bad = (int(v) for v in counters)
    return Progress(epoch, batch, step, bad, best)


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


def checkpoint_name(stage: str, step: int) -> str:
    return f"ckpt-{stage}-{step:09d}.safetensors"


def list_checkpoints(run: Path) -> list[tuple[int, int, Path]]:
    """(stage index, step, path) of every checkpoint in `run`, oldest first."""
    found = []
    for p in run.glob("ckpt-*.safetensors"):
        m = _NAME.match(p.name)
        if m:
            found.append((STAGE_ORDER.index(m.group(1)), int(m.group(2)), p))
    return sorted(found)


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1][2] if found else None


def remove_stale_temporaries(run: Path) -> list[Path]:
    """Delete the temporary files of writes a killed process never finished (they are never read)."""
    stale = sorted(run.glob(".*.safetensors.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def prune(run: Path, stage: str, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints of `stage` (the best file is separate)."""
    mine = [p for s, _, p in list_checkpoints(run) if STAGE_ORDER[s] == stage]
    for p in mine[:-keep_last]:
        p.unlink(missing_ok=True)
