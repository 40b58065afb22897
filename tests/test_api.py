"""giftnet.api (issue 12, item 9): load weights in eval mode, harmonise an array of any size, as the CLI does;
and the console scripts named in pyproject.toml point at real entry points."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from giftnet import api, harmonize
from giftnet.config import ModelConfig
from giftnet.errors import UsageError, WeightsError
from giftnet.model import GiftNet
from giftnet.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = GiftNet(ModelConfig(base_channels=8, gift_sites=("E1",)))
    with torch.no_grad():  # a random model that visibly changes the foreground
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(model, path)
    return path


def _inputs(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 5 : w // 2] = 255
    return image, mask


def test_load_model_is_in_eval_mode_and_on_the_device(weights):
    model = api.load_model(weights, device="cpu")
    assert not model.training and all(not m.training for m in model.modules())
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(WeightsError, match="does not exist"):
        api.load_model(weights.parent / "absent.safetensors")


@pytest.mark.parametrize(("h", "w", "full_res"), [(37, 53, False), (300, 20, False), (37, 53, True)])
def test_harmonize_array_any_size(weights, h, w, full_res):
    model = api.load_model(weights)
    image, mask = _inputs(h, w)
    out = api.harmonize_array(model, image, mask, full_res=full_res)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], image[mask == 0])  # background untouched
    assert not np.array_equal(out[mask > 0], image[mask > 0])  # the foreground is harmonised
    assert not model.training
    soft = api.harmonize_array(model, image, mask.astype(np.float32) / 255.0, full_res=full_res)
    assert np.array_equal(soft, out)  # uint8 0-255 and float 0-1 masks mean the same


def test_harmonize_array_equals_the_cli(weights, tmp_path):
    image, mask = _inputs(40, 56)
    Image.fromarray(image).save(tmp_path / "c.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    argv = ["--image", str(tmp_path / "c.png"), "--mask", str(tmp_path / "m.png"), "--weights", str(weights)]
    assert harmonize.main([*argv, "--out", str(tmp_path / "o.png"), "--device", "cpu"]) == 0
    from_cli = np.asarray(Image.open(tmp_path / "o.png"))
    model = api.load_model(weights)
    from_api = api.harmonize_array(model, api.read_image(tmp_path / "c.png"), api.read_mask(tmp_path / "m.png"))
    assert np.array_equal(from_cli, from_api)


@pytest.mark.parametrize(
    ("image", "mask", "words"),
    [
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "HxWx3 uint8"),
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), "HxWx3 uint8"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 2, 1), np.uint8), "mask must be HxW"),
        (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 2.0), "[0, 1]"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int64), "mask must be uint8"),
    ],
)
def test_harmonize_array_refuses_bad_arrays_by_name(weights, image, mask, words):
    with pytest.raises(UsageError, match=re_escape(words)):
        api.harmonize_array(api.load_model(weights), image, mask)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_console_scripts_point_at_callable_mains():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"giftnet-train", "giftnet-evaluate", "giftnet-harmonize", "giftnet-check", "giftnet-synth"}
    for target in scripts.values():
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name)), target
    with pytest.raises(SystemExit) as info:  # each parses its own arguments: --help exits 0
        importlib.import_module("giftnet.evaluate").main(["--help"])
    assert info.value.code == 0
