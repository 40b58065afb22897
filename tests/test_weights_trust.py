"""Weights files are checked before they are trusted (issue 11) and carry their role (issue 13).

Bounded metadata before any allocation, non-finite tensors refused naming file and tensor, FIFOs
refused without blocking, a Triton-trained file runs on a CPU, teacher and model weights are
not confused, and files written before roles were recorded load as models with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import giftnet.weights as weights_mod
from giftnet import evaluate, harmonize
from giftnet.config import ModelConfig
from giftnet.errors import UserError, WeightsError
from giftnet.model import GiftNet, build_teacher
from giftnet.weights import WeightsNote, load_weights, read_model_config, read_role, save_weights

SMALL = ModelConfig(base_channels=8, gift_sites=("D3",))


def rewrite(src: Path, dst: Path, *, meta: dict | None = None, tensors: dict | None = None) -> Path:
    """A copy of weights file `src` with metadata entries and tensors replaced."""
    with safe_open(str(src), "pt") as f:
        old_meta, old = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    new_meta = {k: v for k, v in (old_meta | (meta or {})).items() if v is not None}
    save_file(old | (tensors or {}), dst, metadata=new_meta)
    return dst


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.safetensors"
    save_weights(GiftNet(SMALL), path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base_channels": 2048}, "base_channels"),
        ({"base_channels": 12}, "base_channels"),
        ({"base_channels": True}, "'base_channels' must be an integer"),
        ({"mlp_hidden": 1e10}, "'mlp_hidden' must be an integer"),
        ({"mlp_hidden": 10**10}, "mlp_hidden"),
        ({"demod_eps": float("nan")}, "demod_eps"),
        ({"demod_eps": 0.0}, "demod_eps"),
        ({"gift_init_noise": float("inf")}, "gift_init_noise"),
        ({"guidance": "magic"}, "'guidance' must be one of"),
        ({"gift_sites": ["E9"]}, "'gift_sites'"),
        ({"modconv_impl": "cuda"}, "'modconv_impl' must be one of"),
        ({"widht": 8}, "unknown field(s) ['widht']"),
    ],
)
def test_bad_metadata_is_refused_before_any_allocation(small, tmp_path, monkeypatch, change, message):
    cfg = SMALL.to_dict() | change
    bad = rewrite(small, tmp_path / "bad.safetensors", meta={"model_config": json.dumps(cfg)})

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built from unchecked metadata")

    monkeypatch.setattr(weights_mod, "GiftNet", no_model)
    with pytest.raises(WeightsError) as info:
        load_weights(bad)
    assert message in str(info.value) and str(bad) in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"'])
def test_model_config_that_is_not_an_object(small, tmp_path, text):
    bad = rewrite(small, tmp_path / "bad.safetensors", meta={"model_config": text})
    with pytest.raises(WeightsError, match=r"bad\.safetensors"):
        read_model_config(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tensors_are_refused_naming_file_and_tensor(small, tmp_path, value):
    with safe_open(str(small), "pt") as f:
        name = "gift.sites.D3.weight"
        t = f.get_tensor(name).clone()
    t[0, 0, 1, 1] = value
    bad = rewrite(small, tmp_path / "nan.safetensors", tensors={name: t})
    with pytest.raises(WeightsError, match=r"nan\.safetensors: tensor gift\.sites\.D3\.weight holds 1 non-finite"):
        load_weights(bad)


def test_harmonize_refuses_nan_weights_instead_of_writing_black(small, tmp_path, capsys):
    with safe_open(str(small), "pt") as f:
        t = f.get_tensor("decoder.to_rgb.weight").clone()
    t.fill_(float("nan"))
    bad = rewrite(small, tmp_path / "nan.safetensors", tensors={"decoder.to_rgb.weight": t})
    image, mask, out = tmp_path / "c.png", tmp_path / "m.png", tmp_path / "o.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    argv = ["--image", str(image), "--mask", str(mask), "--weights", str(bad), "--out", str(out)]
    assert harmonize.main(argv) == 2
    assert "non-finite" in capsys.readouterr().err and not out.exists()


def test_a_fifo_is_refused_without_blocking(fifo_weights):
    for fn in (load_weights, read_model_config):
        with pytest.raises(UserError, match="not a regular file"):
            fn(fifo_weights)


def test_triton_trained_weights_run_on_a_cpu_with_a_note(tmp_path, monkeypatch):
    """Decision: the file's kernel choice says how it was trained, not what must run; fall back."""
    cfg = ModelConfig(base_channels=8, gift_sites=("D3",), modconv_impl="triton")
    model = GiftNet(cfg).eval()
    path = tmp_path / "triton.safetensors"
    save_weights(model, path)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.warns(WeightsNote, match="modconv_impl 'triton'"):
        loaded = load_weights(path, "cpu")
    assert loaded.config.modconv_impl == "auto" and loaded.config == cfg  # the kernel is not the architecture
    image, mask = torch.randn(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    with torch.no_grad():
        ref = GiftNet(ModelConfig(base_channels=8, gift_sites=("D3",))).eval()
        ref.load_state_dict(model.state_dict())
        torch.testing.assert_close(loaded(image, mask)["images"], ref(image, mask)["images"], rtol=0, atol=0)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert load_weights(path, "cpu").config.modconv_impl == "triton"  # the interpreter can run it


def test_weights_record_their_role(tmp_path):
    save_weights(build_teacher(SMALL), tmp_path / "t.safetensors")
    save_weights(GiftNet(ModelConfig(base_channels=8, gift_sites=())), tmp_path / "row1.safetensors")
    assert read_role(tmp_path / "t.safetensors") == "teacher"
    assert read_role(tmp_path / "row1.safetensors") == "model"  # no GIFT, still a model (Table 3 row 1)
    with pytest.raises(WeightsError, match=r"are a teacher .*but a harmonization model is needed"):
        load_weights(tmp_path / "t.safetensors")
    assert load_weights(tmp_path / "t.safetensors", role="teacher").role == "teacher"
    assert load_weights(tmp_path / "row1.safetensors").role == "model"
    with pytest.raises(WeightsError, match=r"but a teacher .* is needed"):
        load_weights(tmp_path / "row1.safetensors", role="teacher")


def test_evaluate_and_harmonize_refuse_a_teacher(tmp_path, capsys):
    teacher = tmp_path / "teacher.safetensors"
    save_weights(build_teacher(SMALL), teacher)
    image, mask = tmp_path / "c.png", tmp_path / "m.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    for cli, argv in (
        (evaluate.main, ["--data", str(tmp_path), "--weights", str(teacher), "--device", "cpu", "--backend", "torch"]),
        (harmonize.main, ["--image", str(image), "--mask", str(mask), "--weights", str(teacher),
                          "--out", str(tmp_path / "o.png")]),
    ):  # fmt: skip
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert "are a teacher" in err and str(teacher) in err and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()


def test_old_weights_without_a_role_load_as_a_model_with_a_note(small, tmp_path):
    old = rewrite(small, tmp_path / "old.safetensors", meta={"role": None})
    assert read_role(old) is None
    with pytest.warns(WeightsNote, match="do not say whether they are a model or a teacher"):
        model = load_weights(old)
    assert model.role == "model" and not model.training
    with pytest.warns(WeightsNote):
        load_weights(old, role="teacher")  # an old run's teacher.safetensors still resumes
    odd = rewrite(small, tmp_path / "odd.safetensors", meta={"role": "student"})
    with pytest.raises(WeightsError, match="unknown role 'student'"):
        load_weights(odd)
