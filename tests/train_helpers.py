"""Helpers the trainer tests share: a tiny dataset, trainer argv, subprocess trainers, weight checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
# One intra-op thread in the trainers started: two test workers on two cores would spin-wait.
ENV = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "GIFTNET_TEST_HOOK")} | {
    "PYTHONPATH": str(ROOT),
    "OMP_NUM_THREADS": "1",
}


def build_tiny_data(folder: Path, n_test: int = 4) -> Path:
    from pipeline.synth import build_demo_dataset

    return build_demo_dataset(folder, n_train=16, n_test=n_test, size=40, seed=0)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """1 reconstruction epoch, then 2 harmonization epochs of 4 steps, evaluated after each epoch."""
    return [
        "--data", str(data), "--out", str(out), "--epochs", "2", "--teacher-epochs", "1", "--batch-size", "4",
        "--crop-size", "32", "--eval-size", "32", "--base-channels", "8", "--ckpt-every", "2", "--log-every", "2",
        "--backend", "torch", "--workers", "0", "--eval-every", "1", *extra,
    ]  # fmt: skip


def train_py(argv: list[str], hook: str | None = None, **kw) -> subprocess.CompletedProcess:
    """train.py in a subprocess (with GIFTNET_TEST_HOOK=hook if given)."""
    env = ENV | ({"GIFTNET_TEST_HOOK": hook} if hook else {})
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)  # fmt: skip


def start_train_py(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_for(pattern: str, folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"trainer ended before {pattern} appeared:\n{output}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no {pattern} within {timeout} s")
        time.sleep(0.01)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (tests run beside others that start rendezvous servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs between {a} and {b}"
