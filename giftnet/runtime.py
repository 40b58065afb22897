"""What the inference commands (evaluate, harmonize, the Python API) share: device, precision, model.

Autocast itself is giftnet.training.precision.autocast, the trainer's; this module adds the checks
a user-given --precision and --device need before any work starts.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from giftnet.choices import FIXED_PRECISIONS as PRECISIONS
from giftnet.errors import UsageError, WeightsError
from giftnet.fileio import check_regular_file
from giftnet.training.precision import autocast
from giftnet.weights import load_weights


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast for `precision` on `device` ("fp32": none); UsageError for combinations that cannot run."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp16")
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise UsageError(f"precision {precision}: autocast is not available on {device.type}")
    return autocast(precision, device)


def default_device() -> str:
    """ "cuda" where there is a GPU, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device) -> torch.device:
    """A torch.device for --device, refusing what cannot run here (no CUDA, meta, unknown names)."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device!r}: not a device ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device}: only cpu and cuda are supported")
    return dev


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """GiftNet weights from a safetensors file, on `device`, in eval mode; WeightsError naming the file."""
    path = check_regular_file(path, "weights file", error=WeightsError)
    model = load_weights(path, check_device(device))
    return model.eval()
