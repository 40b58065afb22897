"""Faults (issue 8, item 3): repeated SIGKILLs, a full disk during a checkpoint, non-finite losses."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from giftnet import fileio
from giftnet.config import ModelConfig
from giftnet.model import build_teacher
from giftnet.training import loop
from giftnet.training.checkpoint import load_checkpoint, read_metadata
from giftnet.training.cli import main
from tests.train_helpers import (
    assert_same_weights,
    build_tiny_data,
    start_train_py,
    stats_lines,
    train_args,
    wait_until,
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_data(tmp_path_factory.mktemp("data"), test_split=False)


def args(data: Path, out: Path, *extra: str) -> list[str]:
    """4 reconstruction steps, then 4 harmonization steps; a checkpoint and a stats line after every step."""
    return train_args(data, out, "--keep-last", "2", *extra, epochs=1, eval_every=0, every=1)


TOTAL_STEPS = 8


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    assert main(args(tiny_data, out)) == 0
    return out


@pytest.mark.slow
def test_repeated_sigkills_at_random_steps_end_with_the_uninterrupted_weights(tiny_data, reference, tmp_path):
    out = tmp_path / "killed"
    kills = sorted(random.Random(8).sample(range(1, TOTAL_STEPS), 4))  # steps seen in stats.jsonl before a kill
    for target in kills:
        resume = ["--resume", str(out)] if (out / "config.json").exists() else []
        proc = start_train_py([*args(tiny_data, out), *resume])
        wait_until(lambda t=target: stats_lines(out) >= t, f"step {target}", proc, poll=0.005)
        proc.send_signal(signal.SIGKILL)  # at any point: mid-step, mid-checkpoint, mid-log line
        proc.wait()
        proc.stdout.close()
    assert main(["--resume", str(out)]) == 0
    assert_same_weights(reference / "teacher.safetensors", out / "teacher.safetensors")
    assert_same_weights(reference / "model.safetensors", out / "model.safetensors")
    assert not list(out.glob(".*.tmp"))  # temporaries of killed writes are removed on resume
    assert stats_lines(out) == TOTAL_STEPS  # the log was truncated to each resume point: no step twice


class DiskFull:
    """os.fsync that fails with ENOSPC for the temporary file of one checkpoint (as a full disk would)."""

    def __init__(self, name_part: str) -> None:
        self.name_part, self.real, self.failed = name_part, os.fsync, []

    def __call__(self, fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if self.name_part in target and target.endswith(".tmp"):
            self.failed.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real(fd)


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, where):
    path = tmp_path / "weights.safetensors"
    fileio.atomic_write_bytes(path, b"old contents")
    if where == "fsync":
        monkeypatch.setattr(fileio.os, "fsync", DiskFull("weights"))
    else:
        real_fdopen = os.fdopen

        def fdopen(fd, *a, **kw):
            f = real_fdopen(fd, *a, **kw)

            class Full:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    f.close()

                def write(self, data):
                    f.write(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            return Full()

        monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    with pytest.raises(OSError, match="No space left on device"):
        fileio.atomic_write_bytes(path, b"new contents, longer than the old ones")
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]


def test_disk_full_during_a_checkpoint_is_reported_and_the_run_resumes_exactly(
    tiny_data, reference, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "full"
    disk = DiskFull("ckpt-reconstruction-000000003")
    monkeypatch.setattr(fileio.os, "fsync", disk)
    assert main(args(tiny_data, out, "--stage", "reconstruction")) == 1
    err = capsys.readouterr().err
    assert disk.failed, "the simulated full disk was never hit"
    assert "Traceback" not in err
    assert "cannot write checkpoint" in err and "ckpt-reconstruction-000000003" in err
    assert "No space left on device" in err and "ckpt-reconstruction-000000002" in err and "--resume" in err
    assert not list(out.glob(".*.tmp"))
    assert not (out / "ckpt-reconstruction-000000003.safetensors").exists()
    previous = out / "ckpt-reconstruction-000000002.safetensors"
    assert read_metadata(previous)["stage"] == "reconstruction"  # intact and readable
    model = build_teacher(ModelConfig(base_channels=8))
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    progress = load_checkpoint(previous, model=model, optimizer=optimizer, scaler=scaler)
    assert (progress.epoch, progress.batch, progress.step) == (0, 2, 2)
    assert len(optimizer.state) == len(list(model.parameters()))
    monkeypatch.undo()  # space was freed
    assert main(["--resume", str(out)]) == 0
    assert_same_weights(reference / "teacher.safetensors", out / "teacher.safetensors")  # stage 1 of the same run


def nan_on_calls(bad_calls):
    """A total_loss whose result is NaN on the given (1-based) calls, as a diverging step would give."""
    real = loop.total_loss
    calls = [0]

    def total_loss(*a, **kw):
        calls[0] += 1
        parts = real(*a, **kw)
        if bad_calls is None or calls[0] in bad_calls:
            parts = dict(parts, total=parts["total"] * float("nan"))
        return parts

    return total_loss


def test_a_non_finite_loss_is_skipped_and_reported(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "total_loss", nan_on_calls({2}))
    out = tmp_path / "nan"
    assert main(args(tiny_data, out, "--stage", "reconstruction", "--log-every", "2", "--ckpt-every", "2")) == 0
    text = capsys.readouterr().out
    assert "step 2: 1 step(s) with a non-finite loss were skipped (1 in all)" in text
    assert [json.loads(line)["skipped"] for line in (out / "stats.jsonl").open()] == [1.0, 0.0]
    weights = load_file(out / "teacher.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    last = sorted(out.glob("ckpt-reconstruction-*"))[-1]
    assert load_file(last)["progress"].tolist()[3] == 1  # bad_steps is part of the resumable state


def test_a_run_that_keeps_producing_non_finite_losses_stops_with_a_message(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "total_loss", nan_on_calls(None))
    out = tmp_path / "diverged"
    argv = args(tiny_data, out, "--stage", "reconstruction", "--log-every", "3", "--max-bad-steps", "3")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "3 consecutive steps had a non-finite loss (limit --max-bad-steps 3)" in err
    assert "Traceback" not in err
    assert not (out / "teacher.safetensors").exists()
