"""`python -m giftnet.export`: a training checkpoint (or a run folder's newest) becomes weights (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from giftnet.config import ModelConfig
from giftnet.export import main
from giftnet.model import build_model, build_teacher
from giftnet.training.checkpoint import Progress, save_checkpoint
from giftnet.training.runfolder import checkpoint_name
from giftnet.weights import load_weights, read_role, save_weights

ROOT = Path(__file__).resolve().parents[1]
CFG = ModelConfig(base_channels=8, gift_sites=("D3",))


def write_checkpoint(run: Path, stage: str, step: int, seed: int) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_teacher(CFG) if stage == "reconstruction" else build_model(CFG)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    path = run / checkpoint_name(stage, step)
    save_checkpoint(path, stage=stage, model=model, optimizer=opt, scaler=scaler, progress=Progress(step=step),
                    train_config={"model": CFG.to_dict()})  # fmt: skip
    return path, model


def same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_checkpoint_becomes_model_weights_that_evaluate_loads(tmp_path, capsys):
    ckpt, model = write_checkpoint(tmp_path, "harmonization", 60, seed=1)
    out = tmp_path / "exported" / "model.safetensors"
    assert main([str(ckpt), "--out", str(out)]) == 0
    assert "model weights" in capsys.readouterr().out
    loaded = load_weights(out)
    assert read_role(out) == "model" and loaded.config == CFG and same_tensors(loaded, model)
    assert not list(out.parent.glob(".*.tmp"))


def test_a_run_folder_exports_its_newest_checkpoint_and_stage_gives_the_role(tmp_path):
    write_checkpoint(tmp_path, "reconstruction", 500, seed=1)
    _, newest = write_checkpoint(tmp_path, "harmonization", 20, seed=2)  # stage 2 comes after stage 1
    assert main([str(tmp_path), "--out", str(tmp_path / "w.safetensors")]) == 0
    assert same_tensors(load_weights(tmp_path / "w.safetensors"), newest)
    teacher_run = tmp_path / "t"
    teacher_run.mkdir()
    ckpt, teacher = write_checkpoint(teacher_run, "reconstruction", 7, seed=3)
    assert main([str(ckpt), "--out", str(tmp_path / "t.safetensors")]) == 0
    assert read_role(tmp_path / "t.safetensors") == "teacher"
    assert same_tensors(load_weights(tmp_path / "t.safetensors", role="teacher"), teacher)


def test_export_refuses_to_overwrite_its_input(tmp_path, capsys):
    ckpt, _ = write_checkpoint(tmp_path, "harmonization", 1, seed=1)
    before = ckpt.read_bytes()
    link = tmp_path / "link.safetensors"
    os.link(ckpt, link)
    for out in (ckpt, link):
        assert main([str(ckpt), "--out", str(out)]) == 2
        assert "is the input" in capsys.readouterr().err
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("what", ["weights", "empty-folder", "missing", "folder-as-out", "nan"])
def test_export_refusals_leave_the_output_alone(tmp_path, capsys, what):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous")
    source = tmp_path / "src.safetensors"
    if what == "weights":
        save_weights(build_model(CFG), source)
        expect = "not a GiftNet training checkpoint"
    elif what == "empty-folder":
        source = tmp_path / "run"
        source.mkdir()
        expect = "no ckpt-*.safetensors"
    elif what == "missing":
        expect = "does not exist"
    elif what == "folder-as-out":
        source, _ = write_checkpoint(tmp_path, "harmonization", 1, seed=1)
        out = tmp_path / "dir"
        out.mkdir()
        expect = "is a folder"
    else:
        model = build_model(CFG)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        source = tmp_path / checkpoint_name("harmonization", 2)
        save_checkpoint(source, stage="harmonization", model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                        scaler=torch.amp.GradScaler("cpu"), progress=Progress(), train_config={})  # fmt: skip
        expect = "non-finite"
    assert main([str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err, err
    if out.is_file():
        assert out.read_bytes() == b"previous"


def test_module_entry_point(tmp_path):
    write_checkpoint(tmp_path, "harmonization", 3, seed=1)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "giftnet.export", str(tmp_path), "--out", str(tmp_path / "m.st")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_role(tmp_path / "m.st") == "model"
