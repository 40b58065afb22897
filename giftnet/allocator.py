"""glibc malloc settings for CPU training and inference: keep freed tensor memory instead of unmapping it.

PyTorch's CPU allocator is plain malloc. glibc serves any block above its mmap threshold (128 KiB
at start, adapting up to 32 MiB) with a fresh mmap and returns it to the kernel on free, and trims
the heap top above 128 KiB. A GiftNet step allocates and frees hundreds of activation blocks of
1-50 MB, so every step page-faults its whole working set in again: on a 2-core CPU about as much
time goes to the kernel (sys) as to the model. Turning mmap off for large blocks (M_MMAP_MAX 0:
they come from the heap) and never trimming keeps those pages mapped and reused. The cost is that
the process keeps its peak heap until it exits, which is what a training or inference process
wants anyway.

Set GIFTNET_MALLOC=default to leave glibc as it is (bench/malloc.py measures both side by side).
Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
ENV = "GIFTNET_MALLOC"
_done: dict[str, bool] = {}


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def configure_allocator() -> bool:
    """Apply the settings once per process (call it first thing in an entry point); True when applied."""
    if "applied" in _done:
        return _done["applied"]
    applied = False
    if os.environ.get(ENV, "").lower() != "default":
        libc = _libc()
        if libc is not None:
            # mallopt returns 1 on success; each setting is independent, so apply all and report all.
            results = [
                libc.mallopt(M_MMAP_MAX, 0),  # large blocks from the heap, not per-block mmaps
                libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1),  # never give the heap top back
                libc.mallopt(M_TOP_PAD, 64 << 20),  # grow the heap 64 MiB at a time
            ]
            applied = all(r == 1 for r in results)
    _done["applied"] = applied
    return applied
