"""Model weights as safetensors with the architecture in the metadata, so loading needs no flags.

Files are read only through safetensors (no pickle, no code execution) and checked against the
architecture they declare: missing, extra, mis-shaped or non-float tensors are refused with a
message naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from giftnet.config import ModelConfig
from giftnet.errors import WeightsError
from giftnet.fileio import atomic_write_bytes
from giftnet.model import GiftNet

FORMAT = "giftnet-weights"


def save_weights(model: GiftNet, path: str | Path, extra_metadata: dict[str, str] | None = None) -> None:
    """Write the model's parameters and buffers (floats as fp32) and its config, atomically."""
    tensors = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    metadata = {"format": FORMAT, "model_config": model.config.to_json(), **(extra_metadata or {})}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_model_config(path: str | Path) -> ModelConfig:
    """The architecture a weights file declares."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT or "model_config" not in meta:
        raise WeightsError(f"{path}: not a GiftNet weights file (metadata format={meta.get('format')!r})")
    try:
        return ModelConfig.from_dict(json.loads(meta["model_config"]))
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: invalid model_config metadata ({exc})") from exc


def load_state_checked(
    path: str | Path, expected: dict[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Read the tensors named `prefix + key` from `path`, refusing any mismatch with `expected`.

    Among the file's tensors whose names start with `prefix`, the names must be exactly
    expected's keys (prefixed), with the same shapes and kinds of dtype (floats may differ in
    precision and are cast). Returns them under expected's keys.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = {k[len(prefix) :] for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118 (not a dict)
            missing = sorted(set(expected) - keys)
            extra = sorted(keys - set(expected))
            if missing or extra:
                raise WeightsError(f"{path}: tensors do not match the model: missing {missing[:5]}, extra {extra[:5]}")
            state = {}
            for name, ref in expected.items():
                t = f.get_tensor(prefix + name)
                if tuple(t.shape) != tuple(ref.shape):
                    raise WeightsError(f"{path}: {name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
                if t.is_floating_point() != ref.is_floating_point() or (
                    not ref.is_floating_point() and t.dtype != ref.dtype
                ):
                    raise WeightsError(f"{path}: {name} has dtype {t.dtype}, expected {ref.dtype}")
                state[name] = t.to(ref.dtype)
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    return state


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> GiftNet:
    """Build the model a weights file declares and load its tensors."""
    model = GiftNet(read_model_config(path))
    model.load_state_dict(load_state_checked(path, model.state_dict()))
    return model.to(device)
