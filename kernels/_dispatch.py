"""What every kernel op shares: the choice of implementation (`impl=`), the launch helper, the test hook, the AOT registry."""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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


# ---------------------------------------------------------------------------------------------
# Launching: one helper for every Triton kernel, one test hook, one AOT registry.

_FORCED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("kernels_forced_launch", default=None)


@contextlib.contextmanager
def forced_launch(config: Any = None, **params: Any) -> Iterator[None]:
    """Test hook: every kernel launched inside uses `config` (a triton.Config) instead of autotuning
    or the interpreter's default; `params` are op-specific launch choices read with
    `forced_param` (e.g. relation's pixels per program, `chunk=`)."""
    token = _FORCED.set({"config": config, **params})
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced_param(name: str) -> Any:
    """A launch choice forced by `forced_launch(name=...)`, None when not forced."""
    return (_FORCED.get() or {}).get(name)


def config_kwargs(config: Any) -> dict[str, Any]:
    """Launch keywords of a triton.Config (its meta-parameters and compile options)."""
    out = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
    if getattr(config, "maxnreg", None) is not None and not interpreter_enabled():
        out["maxnreg"] = config.maxnreg  # the interpreter has no registers to cap
    return out


def fits_channels(config: Any, channels: int, tile_keys: tuple[str, ...]) -> bool:
    """False when a channel tile of `config` is wider than the channel count needs (next power of 2,
    at least 16 for tl.dot): such a tile computes padding, e.g. a 64-wide tile at C = 32."""
    need = max(16, 1 << max(0, channels - 1).bit_length())
    return all(config.kwargs[k] <= need for k in tile_keys)


def channel_pruner(tile_keys: tuple[str, ...], channels_arg: str = "C"):
    """An autotune `early_config_prune` that drops configs with tiles wider than the channels."""

    def prune(configs, named_args, **kwargs):
        c = int(named_args[channels_arg])
        kept = [cfg for cfg in configs if fits_channels(cfg, c, tile_keys)]
        return kept or list(configs)[:1]

    return prune


def autotuned(kernel: Any, configs: Sequence[Any], key: list[str], tile_keys: tuple[str, ...] = ()) -> Any:
    """triton.autotune over `configs` keyed on `key`, pruned by channel count on `tile_keys`."""
    import triton

    prune = {"early_config_prune": channel_pruner(tile_keys)} if tile_keys else None
    return triton.autotune(configs=list(configs), key=key, prune_configs_by=prune)(kernel)


def launch(
    kernel: Any,
    tuned: Any,
    grid: Callable[[dict[str, Any]], tuple[int, ...]],
    *args: Any,
    interpreter_config: Any,
    channels: int,
    tile_keys: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """Launch `kernel` with a fixed config or through its autotuner `tuned`; return the config run
    (the autotuner's pick: its best_config).

    Fixed: a config forced by a test (`forced_launch`), the interpreter's `interpreter_config`,
    or, when torch.are_deterministic_algorithms_enabled(), the first config that fits the
    channel count: autotuning may pick another tile (another reduction order, other bits) on
    another run, so a resumed deterministic run would not reproduce. Otherwise the autotuner
    picks (its key holds no image size, so a new image size does not re-tune).
    """
    import torch

    config = forced_param("config")
    if config is None and interpreter_enabled():
        config = interpreter_config
    if config is None and torch.are_deterministic_algorithms_enabled():
        config = next((c for c in tuned.configs if fits_channels(c, channels, tile_keys)), tuned.configs[0])
    if config is None:
        tuned[grid](*args, **kwargs)
        return getattr(tuned, "best_config", None)
    # A config forced for every kernel of an op may hold meta-parameters a kernel lacks (e.g. a
    # finalize without pixel tiles): each kernel takes the ones it declares.
    names = set(getattr(kernel, "arg_names", ()) or config.kwargs)
    meta = {k: v for k, v in config_kwargs(config).items() if k in names or k not in config.kwargs}
    kernel[grid(config.kwargs)](*args, **kwargs, **meta)
    return config


_AOT_PROVIDERS: dict[str, Callable[[], list]] = {}


def register_aot_specs(op: str, provider: Callable[[], list]) -> None:
    """Each op registers the function listing its ahead-of-time compile specs (giftnet.kernels.aot collects them)."""
    _AOT_PROVIDERS[op] = provider


def aot_providers() -> dict[str, Callable[[], list]]:
    """op name -> spec provider of every op.

    Complete without an import here (which would close a cycle): importing any `kernels.*` module
    runs the package's __init__ first, and that imports every op, each registering its provider.
    """
    return dict(_AOT_PROVIDERS)
