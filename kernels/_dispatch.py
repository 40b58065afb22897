"""Choosing between the Triton kernel and the PyTorch reference of an op (`impl=`)."""

from __future__ import annotations

import importlib.util
import os

import torch

IMPLS = ("auto", "reference", "triton")


def interpreter_enabled() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "no")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_impl(op: str, impl: str, *tensors: torch.Tensor) -> str:
    """Return "triton" or "reference" for `op`, validating the user's `impl=` choice.

    "auto" takes the Triton kernel when every tensor is on a CUDA device and Triton is
    installed, and the reference otherwise. "triton" insists on the kernel: CUDA tensors,
    or CPU tensors under TRITON_INTERPRET=1 (how the kernels are tested without a GPU).
    """
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "reference":
        return "reference"
    on_cuda = all(t.is_cuda for t in tensors)
    if impl == "auto":
        return "triton" if on_cuda and triton_installed() else "reference"
    if not triton_installed():
        raise RuntimeError(f"{op}: impl='triton' needs the triton package, which is not installed")
    if not on_cuda and not interpreter_enabled():
        raise ValueError(
            f"{op}: impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 to run the kernel "
            "on the CPU through Triton's interpreter); use impl='reference' or 'auto' on the CPU"
        )
    return "triton"


def load_triton_op(op: str, module: str, name: str):
    """Import the Triton implementation `name` from `module`, with a clear error if absent."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"{op}: the Triton implementation could not be imported ({exc})") from exc
    return getattr(mod, name)
