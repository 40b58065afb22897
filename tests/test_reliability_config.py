"""Bad configuration (issue 8, item 2): clear messages, no traceback, non-zero exit.

tests/test_train.py covers --batch-size 0, --lr -1, --crop-size 0, an unknown --stage and GIFT
site, a missing --init-weights file, an unknown option, a missing --data and --resume of a run
with another architecture; this file covers the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from giftnet import evaluate, harmonize
from giftnet.config import ModelConfig
from giftnet.model import GiftNet, build_model, build_teacher
from giftnet.training.checkpoint import Progress, save_checkpoint
from giftnet.training.cli import main
from giftnet.weights import save_weights
from tests.train_helpers import build_tiny_data, run_main, train_args


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_data(tmp_path_factory.mktemp("data"), n_train=8, test_split=False)


def args(data: Path, out: Path, *extra: str) -> list[str]:
    return train_args(data, out, *extra, epochs=1, eval_every=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Weights and look-alikes: the right teacher, other architectures, a plain safetensors, a checkpoint."""
    d = tmp_path_factory.mktemp("weights")
    out = {name: d / f"{name}.safetensors" for name in ("teacher8", "teacher16", "model16", "plain", "ckpt", "cut")}
    save_weights(build_teacher(ModelConfig(base_channels=8)), out["teacher8"])
    save_weights(build_teacher(ModelConfig(base_channels=16)), out["teacher16"])
    save_weights(GiftNet(ModelConfig(base_channels=16)), out["model16"])
    save_file({"weight": torch.zeros(3, 3)}, out["plain"], metadata={"format": "pt"})
    model = build_model(ModelConfig(base_channels=8))
    opt = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    train_config = {"model": model.config.to_dict()}
    save_checkpoint(out["ckpt"], stage="harmonization", model=model, optimizer=opt, scaler=scaler,
                    progress=Progress(), train_config=train_config)  # fmt: skip
    data = out["teacher8"].read_bytes()
    out["cut"].write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--crop-size", "12"], "--crop-size must be a positive multiple of 8"),
        (["--lr", "0"], "--lr must be > 0 and finite"),
        (["--lr", "nan"], "--lr must be > 0 and finite"),
        (["--lr", "inf"], "--lr must be > 0 and finite"),
        (["--distill-weight", "inf"], "(--distill-weight): must be finite"),
        (["--gamma", "-1"], "gamma"),
        (["--max-bad-steps", "0"], "--max-bad-steps must be >= 1"),
        (["--keep-last", "0"], "--keep-last must be >= 1"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--eval-size", "0"], "--eval-size must be a positive multiple of 8"),
        (["--ablation", "99"], "Table 3 has rows 1-10"),
        (["--batch-size", "32"], "batch_size=32 exceeds"),
    ],
)
def test_impossible_values_are_refused_by_name(tiny_data, tmp_path, capsys, extra, message):
    code, err = run_main(args(tiny_data, tmp_path / "r", *extra), capsys)
    assert code == 2 and message in err, err
    assert not list((tmp_path / "r").glob("ckpt-*"))


def test_crop_larger_than_the_images_is_fine(tiny_data, tmp_path, capsys):
    """The demo images are 40 px on the short side; a 48 px crop is upsampled, as RandomResizedCrop does."""
    code, _ = run_main(args(tiny_data, tmp_path / "r", "--crop-size", "48", "--stage", "reconstruction"), capsys)
    assert code == 0 and (tmp_path / "r" / "teacher.safetensors").is_file()


def test_unknown_option_exits_with_usage(capsys):
    """argparse refuses these itself (choices come from the configs' Literal types): exit 2, usage."""
    for argv in (
        ["--no-such-flag"],
        ["--epochs", "ten"],
        ["--precision"],
        ["--precision", "fp8"],
        ["--optimizer", "lamb"],
        ["--backend", "opencv"],
        ["--guidance", "magic"],
        ["--device", "mps"],
        ["--device", "meta"],
        ["--gift-sites", "E9"],
        ["--stage", "both"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "usage: train.py" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"epochs": 1, "learning_rate": 0.1}', "unknown field(s) ['learning_rate']"),
        ('{"model": {"widht": 8}}', "widht"),
    ],
)
def test_bad_config_files(tiny_data, tmp_path, capsys, content, message):
    config = tmp_path / "c.json"
    config.write_text(content)
    code, err = run_main([*args(tiny_data, tmp_path / "r"), "--config", str(config)], capsys)
    assert code == 2 and message in err, err


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, err = run_main(["--resume", str(tmp_path)], capsys)
    assert code == 2 and "no config.json there" in err
    (tmp_path / "config.json").write_text("{truncated")
    code, err = run_main(["--resume", str(tmp_path)], capsys)
    assert code == 2 and str(tmp_path / "config.json") in err


HARMONIZATION = ("--stage", "harmonization")


@pytest.mark.parametrize(
    ("flag", "which", "message"),
    [
        ("--init-weights", "model16", "architecture"),
        ("--init-weights", "teacher8", "architecture"),  # a plain backbone is another model than GiftNet's
        ("--init-weights", "plain", "not a GiftNet weights file"),
        ("--init-weights", "ckpt", "not a GiftNet weights file"),
        ("--init-weights", "cut", "not a readable safetensors file"),
        ("--teacher-weights", "teacher16", "the teacher has base_channels 16"),
        ("--teacher-weights", "model16", "a teacher must be the plain backbone"),
        ("--teacher-weights", "plain", "not a GiftNet weights file"),
        ("--teacher-weights", "ckpt", "not a GiftNet weights file"),
    ],
)
def test_weights_from_another_model_are_refused(tiny_data, files, tmp_path, capsys, flag, which, message):
    extra = [*HARMONIZATION, "--teacher-weights", str(files["teacher8"]), flag, str(files[which])]
    code, err = run_main(args(tiny_data, tmp_path / "r", *extra), capsys)
    assert code == 2 and message in err and str(files[which]) in err, err
    assert not list((tmp_path / "r").glob("ckpt-*"))


@pytest.mark.parametrize("which", ["plain", "ckpt", "cut"])
def test_evaluate_and_harmonize_refuse_files_that_are_not_giftnet_weights(files, tmp_path, capsys, which):
    w = str(files[which])
    image, mask = tmp_path / "c.png", tmp_path / "m.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    expect = "not a readable safetensors file" if which == "cut" else "not a GiftNet weights file"
    for cli, argv in (
        (evaluate.main, ["--data", str(tmp_path), "--weights", w, "--device", "cpu", "--backend", "torch"]),
        (harmonize.main, ["--image", str(image), "--mask", str(mask), "--weights", w, "--out", str(tmp_path / "o.png")]),
    ):  # fmt: skip
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert expect in err and w in err and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()


def test_resume_keeps_a_non_default_architecture(tiny_data, tmp_path, capsys):
    """The reconstruction stage's checkpoint records the model it holds (the plain backbone), so a run
    with --guidance none (Table 3 row 6) resumes; it used to be refused as another architecture."""
    out = tmp_path / "r"
    code, _ = run_main(args(tiny_data, out, "--stage", "reconstruction", "--guidance", "none"), capsys)
    assert code == 0
    assert json.loads((out / "config.json").read_text())["model"]["guidance"] == "none"
    code, err = run_main(["--resume", str(out)], capsys)
    assert code == 0, err
