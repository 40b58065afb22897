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
    model: torch.nn.Module,
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
        "model_config": json.dumps(
            train_config["model"] if stage == "harmonization" else teacher_model_dict(train_config)
        ),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def teacher_model_dict(train_config: dict[str, Any]) -> dict[str, Any]:
    model = dict(train_config["model"])
    model["gift_sites"] = []
    return model


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
    """Restore everything `save_checkpoint` wrote; the caller checked the architecture."""
    meta = read_metadata(path)
    model.load_state_dict(load_state_checked(path, model.state_dict(), prefix="model."))
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        scalars = json.loads(meta["optimizer_scalars"])
        opt_state = optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for name in names:
            if name.startswith("optim."):
                _, pid, key = name.split(".", 2)
                value = f.get_tensor(name)
                if name in scalars:
                    value = int(value.item()) if scalars[name] == "int" else float(value.item())
                state.setdefault(int(pid), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": opt_state["param_groups"]})
        scaler_state = scaler.state_dict()
        for key in list(scaler_state):
            if f"scaler.{key}" in names:
                value = f.get_tensor(f"scaler.{key}")
                scaler_state[key] = (
                    type(scaler_state[key])(value.item()) if not torch.is_tensor(scaler_state[key]) else value
                )
        if scaler_state:
            scaler.load_state_dict(scaler_state)
        torch.set_rng_state(f.get_tensor("rng.torch"))
        cuda_states = [
            f.get_tensor(f"rng.cuda.{i}") for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in names
        ]
        if cuda_states and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        epoch, batch, step, bad = (int(v) for v in f.get_tensor("progress").tolist())
    return Progress(epoch, batch, step, bad, float(meta["best"]))


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


def prune(run: Path, stage: str, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints of `stage` (the best file is separate)."""
    mine = [p for s, _, p in list_checkpoints(run) if STAGE_ORDER[s] == stage]
    for p in mine[:-keep_last]:
        p.unlink(missing_ok=True)
