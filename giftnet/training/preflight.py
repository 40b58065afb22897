"""Everything a run needs that can be checked before it starts, for the dry run and the real run.

`preflight(cfg)` refuses, with a message naming the flag or file, what would otherwise fail
later (or as a traceback): a device this machine lacks, a precision the device cannot run, an
optimizer or data backend that is not installed, a batch that does not split over the ranks,
a run folder that cannot be written or already holds another run, and teacher or init weights
that are unreadable, of the wrong role, architecture or width, or hold non-finite tensors.
The data itself is checked by giftnet.training.data when the pairs are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from giftnet.errors import UsageError, WeightsError
from giftnet.fileio import check_regular_file
from giftnet.kernels._dispatch import interpreter_enabled, triton_installed
from giftnet.model import GiftNet, build_teacher
from giftnet.training.config import TrainConfig
from giftnet.training.distributed import restart_count
from giftnet.training.precision import apex_available, cpu_supports
from giftnet.training.runfolder import LOCK_FILE, TEACHER_FILE, RunFolder
from giftnet.weights import check_role, load_state_checked, read_model_config


def preflight(cfg: TrainConfig, *, resume: bool = False) -> torch.device:
    """Check `cfg` against this machine and the files it names; return the device the run will use."""
    resume = resume or restart_count() > 0  # torchrun restarted the group: the run continues
    device = check_device(cfg.device)
    check_precision(cfg.precision, device)
    check_optimizer(cfg.optimizer, device)
    check_backend(cfg.backend)
    check_kernels(cfg, device)
    check_world_size(cfg.batch_size)
    check_run_folder(Path(cfg.out), resume)
    check_weights(cfg, resume)
    return device


def check_device(kind: str) -> torch.device:
    """The device dist.init will pick for this rank, refusing one that is not there."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda" and not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
        raise UsageError(f"--device cuda: CUDA is not available on this machine ({why}); use --device cpu or auto")
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if kind not in ("auto", "cuda"):
        raise UsageError(f"--device {kind}: not supported (choose auto, cpu or cuda)")
    if local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"--device {kind}: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible "
            "(start fewer processes per node)"
        )
    return torch.device("cuda", local_rank)


def check_precision(precision: str, device: torch.device) -> None:
    if precision in ("auto", "fp32"):
        return
    if device.type == "cpu" and not cpu_supports(precision):
        raise UsageError(f"--precision {precision}: not supported by this CPU build of torch; use fp32 or auto")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or auto")


def check_optimizer(kind: str, device: torch.device) -> None:
    if kind != "apex":
        return
    if not apex_available():
        raise UsageError(
            "--optimizer apex needs NVIDIA apex built from source with its CUDA extensions "
            "(it is not on the package index; the index's 'apex' is an unrelated project); use --optimizer adam"
        )
    if device.type != "cuda":
        raise UsageError("--optimizer apex: apex's FusedAdam runs on CUDA only; use --optimizer adam on the CPU")


def check_backend(backend: str) -> None:
    if backend != "dali":
        return
    from giftnet.pipeline.dali_loader import DALI_IMPORT_ERROR

    if DALI_IMPORT_ERROR is not None:
        raise UsageError(f"--backend dali: NVIDIA DALI does not import ({DALI_IMPORT_ERROR}); use auto or torch")


def check_kernels(cfg: TrainConfig, device: torch.device) -> None:
    """An explicit "triton" kernel choice must be able to run on this device."""
    for flag, impl in (("--modconv-impl", cfg.model.modconv_impl), ("--relation-impl", cfg.loss.relation_impl)):
        if impl != "triton":
            continue
        if not triton_installed():
            raise UsageError(f"{flag} triton: the triton package is not installed; use auto")
        if device.type != "cuda" and not interpreter_enabled():
            raise UsageError(f"{flag} triton: the Triton kernels need a CUDA device; use auto (the reference on CPU)")


def check_world_size(batch_size: int) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size % world:
        raise UsageError(f"--batch-size {batch_size} must be divisible by the number of processes ({world})")


def check_run_folder(run: Path, resume: bool) -> None:
    """The run folder must be a folder we can create or write; a new run must not reuse another's."""
    if run.exists() and not run.is_dir():
        raise UsageError(f"--out {run}: exists and is not a folder")
    # Another trainer at work here is the message that matters. Only the main rank looks: under
    # torchrun a peer's probe would race rank 0's own lock, and rank 0 refuses for all of them.
    if os.environ.get("RANK", "0") == "0" and (run / LOCK_FILE).is_file():
        RunFolder(run).check_unlocked()
    if not resume and run.is_dir() and any(run.glob("ckpt-*.safetensors")):
        raise UsageError(f"{run} already holds checkpoints: pass --resume {run} to continue, or another --out")
    existing = run
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {run}: cannot write in {existing} (permission denied)")


def check_weights(cfg: TrainConfig, resume: bool) -> None:
    """Read the init and teacher weights now, exactly as the run will (role, architecture, tensors)."""
    trains_harmonization = cfg.stage in ("all", "harmonization")
    if cfg.init_weights:
        path = check_regular_file(cfg.init_weights, "--init-weights")
        declared = read_model_config(path)
        if declared != cfg.model:
            raise WeightsError(f"--init-weights {path}: architecture {declared} differs from {cfg.model}")
        check_role(path, "model")
        load_state_checked(path, GiftNet(cfg.model).state_dict())
    teacher = None
    if cfg.teacher_weights:
        teacher = check_regular_file(cfg.teacher_weights, "--teacher-weights")
    elif trains_harmonization and cfg.needs_teacher:
        own = Path(cfg.out) / TEACHER_FILE
        if own.exists() or cfg.stage == "harmonization":
            if not own.exists():
                raise UsageError(
                    f"{own}: teacher weights not found (train the reconstruction stage first, or give "
                    "--teacher-weights)"
                )
            teacher = check_regular_file(own, "teacher weights")
    if teacher is not None:
        check_teacher(teacher, cfg)


def check_teacher(path: Path, cfg: TrainConfig) -> None:
    declared = read_model_config(path)
    if declared.gift_sites:
        raise WeightsError(f"{path}: a teacher must be the plain backbone, but these weights have GIFT sites")
    if declared.base_channels != cfg.model.base_channels:
        raise WeightsError(
            f"{path}: the teacher has base_channels {declared.base_channels}, "
            f"but the model being trained has {cfg.model.base_channels}"
        )
    check_role(path, "teacher")
    load_state_checked(path, build_teacher(cfg.model).state_dict())
