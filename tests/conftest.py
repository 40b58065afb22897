"""Shared test set-up: Triton's interpreter on machines without a GPU, seeded RNGs."""

import os
import signal

import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated, so this must run before any
# kernels module is imported. On a GPU machine the kernels compile for the device instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

# Two xdist workers on two cores, each with torch's default thread pool, wait on each other:
# tiny steps then swing from milliseconds to seconds. One thread per worker is steadier.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def png_bytes(width: int, height: int, depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, and a decompression bomb may declare any size."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


@pytest.fixture
def bomb_png() -> bytes:
    """A 68-byte PNG declaring 100000 x 100000 8-bit gray pixels (one row of data)."""
    return png_bytes(100_000, 100_000, 8, 0, b"\x00" * 16)


@pytest.fixture
def fifo_weights(tmp_path):
    """A FIFO named w.safetensors; a 20 s alarm turns an open that blocks on it into a TimeoutError."""
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)

    def timeout(signum, frame):
        raise TimeoutError("opening the FIFO blocked")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    try:
        yield fifo
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The trainer tests' demo dataset (train_helpers.build_tiny_data: 16 train, 4 test pairs at 40 px),
    one per test module; a module that needs other data defines its own `tiny_data`."""
    from tests.train_helpers import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("data"))
