"""Mixed precision and the optimizer: autocast dtype, grad scaler, fused or apex Adam."""

from __future__ import annotations

import contextlib
import importlib.util

import torch

from giftnet.choices import PRECISION_DTYPES, Precision
from giftnet.errors import UsageError


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """ "auto" -> bf16 on GPUs that support it (Ampere and newer), fp16 on older GPUs, fp32 on the CPU."""
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16" and not cpu_supports("fp16"):
            raise UsageError("--precision fp16 is not supported on this CPU build of torch")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def cpu_supports(precision: str) -> bool:
    """Whether CPU autocast runs a 3x3 convolution in this precision here."""
    dtype = PRECISION_DTYPES[precision]
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
        return True
    except RuntimeError:
        return False


def autocast(precision: str, device: torch.device):
    """The forward-pass context for `precision` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISION_DTYPES[precision])


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A grad scaler for every precision: dynamic for fp16; for fp32 and bf16 a fixed scale of 1
    (exact) whose only job is to skip steps with non-finite gradients without a host sync."""
    if precision == "fp16":
        return torch.amp.GradScaler(device.type)
    return torch.amp.GradScaler(device.type, init_scale=1.0, growth_interval=2**30)


def apex_available() -> bool:
    return importlib.util.find_spec("apex") is not None and importlib.util.find_spec("apex.optimizers") is not None


def make_optimizer(params, lr: float, kind: str, device: torch.device) -> torch.optim.Optimizer:
    """Adam(lr, betas 0.9/0.999) as in the paper: apex FusedAdam when asked (and built), torch's fused
    Adam on CUDA. "sgd" (momentum 0.9) is for ablations and for equality tests, where Adam's
    normalisation turns rounding noise in near-zero gradients into lr-sized steps."""
    if kind == "apex":
        if not apex_available():
            raise UsageError(
                "--optimizer apex needs NVIDIA apex built from source with its CUDA extensions "
                "(it is not on the package index; the index's 'apex' is an unrelated project)"
            )
        from apex.optimizers import FusedAdam

        return FusedAdam(params, lr=lr, betas=(0.9, 0.999), adam_w_mode=False)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=device.type == "cuda")
