"""RUN/run-info.json: what "auto" resolved to and the software that ran, for each start of a run.

config.json keeps the settings as given (a resumed run reads it back); this file records the
facts of the machine: device, precision, data backend, world size, git revision, library versions.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from giftnet.pipeline.loaders import resolve_backend
from giftnet.training import distributed as dist
from giftnet.training.monitor import now_utc

LIBRARIES = ("torch", "triton", "numpy", "safetensors", "pillow", "nvidia-dali-cuda120", "nvidia-dali-cpu")


def git_revision() -> str | None:
    """The source tree's commit (with "-dirty" when it has changes), or None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (rev.stdout.strip() or None) if rev.returncode == 0 else None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def run_info(ctx: Any) -> dict[str, Any]:
    device = ctx.device
    return {
        "started": now_utc(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "world_size": dist.world_size(),
        "precision": ctx.precision,
        "channels_last": ctx.channels_last,
        "backend": resolve_backend(ctx.cfg.backend),
        "git_revision": git_revision(),
        "versions": versions(),
    }
