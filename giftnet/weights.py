"""Model weights as safetensors with the architecture and the role in the metadata.

Files are read only through safetensors (no pickle, no code execution). Nothing is trusted
before it is checked: the file must be a regular file (a FIFO would block), the declared
architecture is a bounded ModelConfig built before any tensor is allocated, every tensor's name,
shape and dtype is compared with the model's before it is read, and every float tensor must be
finite. Each refusal is a WeightsError naming the file (and the tensor or field).

The role says what the weights are: the harmonization network ("model") or the reconstruction
branch that distillation uses as its teacher ("teacher"). Loaders say which role they expect.
Files written before roles were recorded have none: they are accepted for either role with a
note (WeightsNote), since most such files are models and refusing them would strand old runs.

A file's `modconv_impl` records how it was trained. If that is "triton" and the device we load
onto cannot run Triton (a CPU without TRITON_INTERPRET), the model falls back to "auto" (the
PyTorch reference there, same numbers) with a note: weights should run wherever they are taken.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from giftnet.choices import ROLES
from giftnet.config import ModelConfig
from giftnet.errors import WeightsError
from giftnet.fields import from_dict
from giftnet.fileio import atomic_write_bytes, check_regular_file
from giftnet.kernels._dispatch import interpreter_enabled, triton_installed
from giftnet.model import GiftNet

FORMAT = "giftnet-weights"

__all__ = ["WeightsError", "WeightsNote", "load_state_checked", "load_weights", "read_model_config", "save_weights"]


class WeightsNote(UserWarning):
    """Something about a weights file the user should know, which does not stop loading it."""


def save_weights(
    model: GiftNet, path: str | Path, extra_metadata: dict[str, str] | None = None, *, role: str | None = None
) -> None:
    """Write the model's parameters and buffers (floats as fp32), config and role, atomically.

    `role` defaults to the model's own (`GiftNet.role`: "teacher" for the reconstruction branch).
    """
    role = role or getattr(model, "role", "model")
    if role not in ROLES:
        raise ValueError(f"save_weights: role must be one of {ROLES}, got {role!r}")
    tensors = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    metadata = {"format": FORMAT, "model_config": model.config.to_json(), "role": role, **(extra_metadata or {})}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _metadata(path: Path) -> dict[str, str]:
    check_regular_file(path, "weights file", error=WeightsError)
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc


def parse_model_config(path: Path, text: str | None) -> ModelConfig:
    """The bounded ModelConfig in a file's `model_config` metadata (weights or checkpoint)."""
    if text is None:
        raise WeightsError(f"{path}: no model_config in the metadata")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"{path}: invalid model_config metadata ({exc})") from None
    return from_dict(ModelConfig, data, f"{path}: invalid model_config metadata", WeightsError)


def read_model_config(path: str | Path) -> ModelConfig:
    """The architecture a weights file declares (checked and bounded; no tensor is read)."""
    path = Path(path)
    meta = _metadata(path)
    if meta.get("format") != FORMAT or "model_config" not in meta:
        raise WeightsError(f"{path}: not a GiftNet weights file (metadata format={meta.get('format')!r})")
    return parse_model_config(path, meta["model_config"])


def read_role(path: str | Path) -> str | None:
    """The role a weights file declares, or None for files written before roles were recorded."""
    path = Path(path)
    role = _metadata(path).get("role")
    if role is not None and role not in ROLES:
        raise WeightsError(f"{path}: unknown role {role!r} in the metadata (expected one of {ROLES})")
    return role


def check_role(path: str | Path, expected: str) -> None:
    """WeightsError unless the file's role is `expected` (a file without a role passes with a note)."""
    role = read_role(path)
    if role is None:
        warnings.warn(
            f"{path}: these weights do not say whether they are a model or a teacher (written by an older "
            f"version); assuming a {expected}",
            WeightsNote,
            stacklevel=3,
        )
    elif role != expected:
        what = {"teacher": "a teacher (the reconstruction branch)", "model": "a harmonization model"}
        hint = " (use model.safetensors or best-model.safetensors)" if expected == "model" else ""
        raise WeightsError(f"{path}: these weights are {what[role]}, but {what[expected]} is needed here{hint}")


def load_state_checked(
    path: str | Path, expected: dict[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Read the tensors named `prefix + key` from `path`, refusing any mismatch with `expected`.

    Among the file's tensors whose names start with `prefix`, the names must be exactly
    expected's keys (prefixed), with the same shapes (checked before reading) and kinds of dtype
    (floats may differ in precision and are cast); float tensors must be finite. Returns them
    under expected's keys.
    """
    path = check_regular_file(path, "weights file", error=WeightsError)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = {k[len(prefix) :] for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118 (not a dict)
            missing = sorted(set(expected) - keys)
            extra = sorted(keys - set(expected))
            if missing or extra:
                raise WeightsError(f"{path}: tensors do not match the model: missing {missing[:5]}, extra {extra[:5]}")
            for name, ref in expected.items():
                shape = tuple(f.get_slice(prefix + name).get_shape())
                if shape != tuple(ref.shape):
                    raise WeightsError(f"{path}: {name} has shape {shape}, expected {tuple(ref.shape)}")
            return {name: _read_tensor(path, f, prefix + name, name, ref) for name, ref in expected.items()}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc


def _read_tensor(path: Path, f, key: str, name: str, ref: torch.Tensor) -> torch.Tensor:
    t = f.get_tensor(key)
    if t.is_floating_point() != ref.is_floating_point() or (not ref.is_floating_point() and t.dtype != ref.dtype):
        raise WeightsError(f"{path}: {name} has dtype {t.dtype}, expected {ref.dtype}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise WeightsError(f"{path}: tensor {name} holds {bad} non-finite value(s) (NaN or inf); refusing it")
    return t.to(ref.dtype)


def runnable_config(cfg: ModelConfig, device: torch.device, path: Path) -> ModelConfig:
    """`cfg`, with modconv_impl "triton" replaced by "auto" (and a note) where Triton cannot run."""
    if cfg.modconv_impl != "triton":
        return cfg
    if triton_installed() and (device.type == "cuda" or interpreter_enabled()):
        return cfg
    warnings.warn(
        f"{path}: trained with modconv_impl 'triton', which cannot run on {device}; using the PyTorch "
        "reference (same results)",
        WeightsNote,
        stacklevel=3,
    )
    return dataclasses.replace(cfg, modconv_impl="auto")


def load_weights(path: str | Path, device: str | torch.device = "cpu", *, role: str | None = "model") -> GiftNet:
    """Build the model a weights file declares, load its tensors, in eval mode on `device`.

    `role`: what the caller needs ("model" to evaluate or harmonize, "teacher" for distillation);
    a file of the other role is refused. None accepts either.
    """
    path = Path(path)
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: cannot load onto device {device!r} ({exc})") from None
    declared = read_model_config(path)
    if role is not None:
        check_role(path, role)
    cfg = runnable_config(declared, device, path)
    model = GiftNet(cfg, role=read_role(path) or role or "model")
    model.load_state_dict(load_state_checked(path, model.state_dict()))
    return model.to(device).eval()
