"""--student-init teacher: the harmonization branch starts from the trained reconstruction branch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from giftnet.config import ModelConfig
from giftnet.model import build_model, build_teacher
from giftnet.training.cli import main
from giftnet.training.stage import copy_backbone
from tests.train_helpers import build_tiny_data, train_args


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_data(tmp_path_factory.mktemp("data"))


def test_copy_backbone_copies_every_backbone_tensor_and_leaves_gift():
    cfg = ModelConfig(base_channels=8)
    torch.manual_seed(1)
    teacher, student = build_teacher(cfg), build_model(cfg)
    gift_before = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("gift.")}
    copy_backbone(teacher, student)
    ours, theirs = student.state_dict(), teacher.state_dict()
    assert theirs and all(torch.equal(ours[k], v) for k, v in theirs.items())
    assert gift_before and all(torch.equal(ours[k], v) for k, v in gift_before.items())


def test_copy_backbone_refuses_another_width():
    with pytest.raises(RuntimeError, match="backbones differ"):
        copy_backbone(build_teacher(ModelConfig(base_channels=8)), build_model(ModelConfig(base_channels=16)))


def test_harmonization_starts_from_the_teacher_without_distilling(tiny_data, tmp_path, capsys):
    # No distillation, so without --student-init the reconstruction branch would not be trained at all.
    out = tmp_path / "run"
    argv = train_args(tiny_data, out, "--distill", "none", "--student-init", "teacher", "--epochs", "1")
    assert main([*argv, "--lr", "1e-12"]) == 0  # a learning rate too small to move a weight in fp32
    log = capsys.readouterr().out
    assert "starts from the reconstruction branch's backbone" in log
    teacher, model = load_file(out / "teacher.safetensors"), load_file(out / "model.safetensors")
    conv = [k for k in teacher if k.endswith("weight") and teacher[k].ndim == 4]
    assert conv and all(torch.allclose(model[k], teacher[k], rtol=0, atol=1e-9) for k in conv)
    scratch = tmp_path / "scratch"
    assert main([*train_args(tiny_data, scratch, "--distill", "none", "--epochs", "1"), "--lr", "1e-12"]) == 0
    assert not (scratch / "teacher.safetensors").exists()  # scratch: nothing to distil from or start from
    assert not all(torch.allclose(load_file(scratch / "model.safetensors")[k], teacher[k]) for k in conv)


def test_student_init_and_init_weights_together_are_refused(tiny_data, tmp_path, capsys):
    argv = train_args(tiny_data, tmp_path / "run", "--student-init", "teacher", "--init-weights", "w.safetensors")
    assert main(argv) == 2
    assert "--student-init teacher and --init-weights" in capsys.readouterr().err
