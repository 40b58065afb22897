"""Helpers the trainer tests share: a tiny dataset, trainer argv, subprocess trainers, weight checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


# build_tiny_data(with_validation=True) makes 20 train pairs of 15 real images, and VAL_ARGS hold
# out 3 of those images (4 pairs), leaving 16 to train on: 4 steps of 4 per epoch, as the plain tiny
# dataset (16 pairs, of which the default --val-fraction 0.05 holds out none). test_train_trust
# checks these counts.
TINY_VAL_FRACTION = "0.2"
VAL_ARGS = ("--val-fraction", TINY_VAL_FRACTION)


def build_tiny_data(
    folder: Path, n_test: int = 4, *, n_train: int = 16, test_split: bool = True, with_validation: bool = False
) -> Path:
    """The demo dataset at 40 px; without `test_split` no test list (no evaluation: a faster run);
    `with_validation`: 20 train pairs, for VAL_ARGS."""
    from giftnet.pipeline.builders.synth import build_demo_dataset

    root = build_demo_dataset(folder, n_train=20 if with_validation else n_train, n_test=n_test, size=40, seed=0)
    if not test_split:
        (root / "HSynth" / "HSynth_test.txt").unlink()
    return root


def train_args(data: Path, out: Path, *extra: str, epochs: int = 2, eval_every: int = 1, every: int = 2) -> list[str]:
    """1 reconstruction epoch, then `epochs` harmonization epochs of 4 steps (16 pairs, batch 4),
    evaluated every `eval_every` epochs (0: never), a checkpoint and a stats line every `every` steps."""
    return [
        "--data", str(data), "--out", str(out), "--epochs", str(epochs), "--teacher-epochs", "1",
        "--batch-size", "4", "--crop-size", "32", "--eval-size", "32", "--base-channels", "8",
        "--ckpt-every", str(every), "--log-every", str(every), "--backend", "torch", "--workers", "0",
        "--eval-every", str(eval_every), *extra,
    ]  # fmt: skip


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The trainer's CLI in this process: (exit code, stderr); a traceback on stderr fails the test."""
    from giftnet.training.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def train_py(
    argv: list[str], hook: str | None = None, env: dict[str, str] | None = None, **kw
) -> subprocess.CompletedProcess:
    """train.py in a subprocess (with GIFTNET_TEST_HOOK=hook if given, `env` added to ENV)."""
    env = ENV | (env or {}) | ({"GIFTNET_TEST_HOOK": hook} if hook else {})
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)  # fmt: skip


def start_train_py(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_until(
    done: Callable[[], bool], what: str, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.01
) -> None:
    """Poll `done()` while the trainer `proc` runs; fail naming `what` if it ends first or time runs out."""
    end = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout is not None else ""
            pytest.fail(f"trainer ended before {what}:\n{output}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"waited {timeout} s in vain until {what}")
        time.sleep(poll)


def wait_for(pattern: str, folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until a file matching `pattern` appears in `folder`."""
    wait_until(lambda: bool(list(folder.glob(pattern))), f"{pattern} appeared", proc, timeout)


def stats_lines(out: Path) -> int:
    """Lines in the run's stats.jsonl (0 before it exists)."""
    try:
        return len((out / "stats.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


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
