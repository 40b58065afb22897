"""train.py's errors: a user's mistake is a message and exit 2, a bug a traceback and exit 1; the
dry run checks what the real run needs (device, precision, optimizer, backend, kernels, run
folder, teacher and init weights) through giftnet.training.preflight (issue 11).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from giftnet.config import ModelConfig
from giftnet.errors import UsageError, UserError
from giftnet.model import GiftNet, build_model, build_teacher
from giftnet.training import preflight as pf
from giftnet.training.cli import main
from giftnet.training.config import TrainConfig
from giftnet.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(ROOT)}


def argv(tmp_path: Path, *extra: str) -> list[str]:
    # --data does not exist: a check that preflight missed would fail later with another message.
    return ["--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "r"), "--base-channels", "8",
            "--backend", "torch", "--workers", "0", "--dry-run", *extra]  # fmt: skip


def refused(tmp_path: Path, capsys, *extra: str) -> str:
    code = main(argv(tmp_path, *extra))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_message(tmp_path, capsys):
    assert "--device cuda: CUDA is not available" in refused(tmp_path, capsys, "--device", "cuda")


def test_more_ranks_than_gpus_is_a_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(UsageError, match="LOCAL_RANK 3 but only 1 GPU"):
        pf.check_device("auto")


def test_optimizer_apex_without_apex_or_on_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pf, "apex_available", lambda: False)
    assert "--optimizer apex needs NVIDIA apex" in refused(tmp_path, capsys, "--optimizer", "apex")
    monkeypatch.setattr(pf, "apex_available", lambda: True)
    assert "runs on CUDA only" in refused(tmp_path, capsys, "--optimizer", "apex", "--device", "cpu")


def test_precision_the_device_cannot_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pf, "cpu_supports", lambda precision: False)
    err = refused(tmp_path, capsys, "--precision", "fp16", "--device", "cpu")
    assert "--precision fp16: not supported by this CPU" in err


def test_backend_dali_without_dali(tmp_path, capsys, monkeypatch):
    from giftnet import pipeline

    monkeypatch.setattr(pipeline.dali_loader, "DALI_IMPORT_ERROR", "No module named 'nvidia.dali'")
    assert "--backend dali: NVIDIA DALI does not import" in refused(tmp_path, capsys, "--backend", "dali")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_triton_kernels_on_a_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "--modconv-impl triton" in refused(tmp_path, capsys, "--modconv-impl", "triton", "--device", "cpu")
    assert "--relation-impl triton" in refused(tmp_path, capsys, "--relation-impl", "triton", "--device", "cpu")


def test_batch_not_divisible_by_the_ranks(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(pf, "check_device", lambda kind: torch.device("cpu"))
    assert "--batch-size 16 must be divisible by the number of processes (3)" in refused(tmp_path, capsys)


def test_run_folder_that_is_a_file_or_holds_another_run(tmp_path, capsys, monkeypatch):
    (tmp_path / "r").write_text("x")
    assert "exists and is not a folder" in refused(tmp_path, capsys)
    (tmp_path / "r").unlink()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "ckpt-harmonization-000000001.safetensors").write_bytes(b"")
    assert "already holds checkpoints" in refused(tmp_path, capsys)
    cfg = TrainConfig(out=str(tmp_path / "r"), model=ModelConfig(base_channels=8))
    pf.check_run_folder(tmp_path / "r", resume=True)  # --resume, or a torchrun restart:
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    pf.preflight(cfg)


def test_the_lock_probe_changes_nothing_and_only_the_main_rank_probes(tmp_path, monkeypatch):
    """Under torchrun every rank runs the preflight; a probe that took the lock and wrote its pid
    raced rank 0's own lock ("in use by another trainer (pid unknown)" under load)."""
    from giftnet.training.runfolder import LOCK_FILE, RunFolder

    holder = RunFolder(tmp_path / "r")
    holder.lock()
    try:
        written = (tmp_path / "r" / LOCK_FILE).read_bytes()
        monkeypatch.setenv("RANK", "1")
        pf.check_run_folder(tmp_path / "r", resume=True)  # a peer rank does not look (rank 0 holds it)
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(UsageError, match=f"in use by another trainer \\(pid {os.getpid()}\\)"):
            pf.check_run_folder(tmp_path / "r", resume=True)
        assert (tmp_path / "r" / LOCK_FILE).read_bytes() == written
    finally:
        holder.unlock()
    pf.check_run_folder(tmp_path / "r", resume=True)  # free again: the probe passes
    assert (tmp_path / "r" / LOCK_FILE).read_bytes() == written  # and leaves the last holder's pid
    RunFolder(tmp_path / "r").lock()  # nothing the probe did keeps a later lock out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("w")
    out = {}
    out["teacher"] = d / "teacher.safetensors"
    save_weights(build_teacher(ModelConfig(base_channels=8)), out["teacher"])
    out["model"] = d / "model.safetensors"
    save_weights(build_model(ModelConfig(base_channels=8)), out["model"])
    out["plain-model"] = d / "plain-model.safetensors"  # Table 3 row 1: no GIFT, but a model
    save_weights(GiftNet(ModelConfig(base_channels=8, gift_sites=())), out["plain-model"])
    for name in ("teacher", "model"):
        with safe_open(str(out[name]), "pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        key = next(k for k, v in tensors.items() if v.is_floating_point())
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = float("nan")
        out[f"nan-{name}"] = d / f"nan-{name}.safetensors"
        save_file(tensors, out[f"nan-{name}"], metadata=meta)
    return out


HARMONIZATION = ("--stage", "harmonization")


@pytest.mark.parametrize(
    ("extra", "which", "message"),
    [
        (("--teacher-weights",), "nan-teacher", "non-finite"),
        (("--teacher-weights",), "plain-model", "these weights are a harmonization model, but a teacher"),
        (("--teacher-weights",), "model", "a teacher must be the plain backbone"),
        (("--init-weights",), "nan-model", "non-finite"),
        (("--init-weights",), "teacher", "architecture"),
        (("--init-weights",), "missing", "does not exist"),
    ],
)
def test_dry_run_reads_the_weights_the_run_would(tmp_path, capsys, weights, extra, which, message):
    path = weights.get(which, tmp_path / "missing.safetensors")
    teacher = () if "--teacher-weights" in extra else ("--teacher-weights", str(weights["teacher"]))
    err = refused(tmp_path, capsys, *HARMONIZATION, *teacher, *extra, str(path))
    assert message in err and str(path) in err, err


def test_dry_run_of_the_second_stage_needs_a_teacher(tmp_path, capsys):
    assert "teacher weights not found" in refused(tmp_path, capsys, *HARMONIZATION)
    # without distillation (Table 3 rows 1-7) no teacher is needed: preflight passes, the data check fails
    code = main(argv(tmp_path, *HARMONIZATION, "--distill", "none"))
    assert code == 2 and "no-data: no such directory" in capsys.readouterr().err


def test_good_weights_pass_preflight(weights, tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), stage="harmonization", model=ModelConfig(base_channels=8),
                      teacher_weights=str(weights["teacher"]), init_weights=str(weights["model"]))  # fmt: skip
    assert pf.preflight(cfg) == torch.device("cpu") or torch.cuda.is_available()


def test_a_fifo_as_weights_is_refused_without_blocking(fifo_weights, tmp_path, capsys):
    for flag in ("--init-weights", "--teacher-weights"):
        err = refused(tmp_path, capsys, *HARMONIZATION, flag, str(fifo_weights))
        assert "not a regular file" in err and str(fifo_weights) in err


@pytest.mark.parametrize("bug", [ValueError("internal"), TypeError("internal"), KeyError("internal")])
def test_an_internal_bug_is_not_turned_into_a_message(tmp_path, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(pf, "check_backend", broken)
    with pytest.raises(type(bug)):
        main(argv(tmp_path))


def test_a_full_disk_stops_with_a_message_other_os_errors_raise(tmp_path, monkeypatch, capsys):
    import giftnet.training.run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(giftnet.training.run, "run", full)
    assert main(argv(tmp_path)) == 1
    assert "the disk is full" in capsys.readouterr().err

    def io_bug(*args, **kwargs):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(giftnet.training.run, "run", io_bug)
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(argv(tmp_path))


def test_exit_status_of_train_py_mistake_2_bug_1(tmp_path):
    """The real command: a mistake prints one line (exit 2), an injected bug its traceback (exit 1)."""
    mistake = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv(tmp_path, "--epochs", "0")],
                             env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert mistake.returncode == 2 and "--epochs must be >= 1" in mistake.stderr
    assert "Traceback" not in mistake.stderr
    inject = (
        "import runpy, sys; import giftnet.training.preflight as p\n"
        "def bug(*a): raise ValueError('an injected bug')\n"
        "p.check_device = bug\n"
        f"sys.argv = ['train.py', *{argv(tmp_path)!r}]\n"
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n"
    )
    bug = subprocess.run([sys.executable, "-c", inject], env=ENV, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bug.returncode == 1, bug.stderr
    assert "Traceback" in bug.stderr and "an injected bug" in bug.stderr


def test_user_errors_exit_2():
    assert UserError.exit_code == 2 and issubclass(UsageError, UserError)
