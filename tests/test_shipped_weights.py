"""The weights shipped in giftnet/data: fp16 safetensors, small, the full GiftNet, used by harmonize by default."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from giftnet import harmonize
from giftnet.weights import load_weights, read_model_config, read_role

WEIGHTS = harmonize.shipped_weights()
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped weights in this checkout")


def test_fp16_small_and_the_full_model():
    assert WEIGHTS.stat().st_size < 8_000_000
    with safe_open(str(WEIGHTS), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (not a dict)
    assert "torch.float16" in {str(d) for d in dtypes} and "torch.float32" not in {str(d) for d in dtypes}
    cfg = read_model_config(WEIGHTS)
    assert cfg.gift_sites and cfg.base_channels == 32
    assert read_role(WEIGHTS) == "model"  # no "older version" note for every user of the default
    model = load_weights(WEIGHTS)
    assert all(p.dtype.is_floating_point and str(p.dtype) == "torch.float32" for p in model.parameters())


def test_harmonize_uses_them_without_weights(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[10:30, 15:40] = 255
    Image.fromarray(image).save(tmp_path / "c.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = tmp_path / "out.png"
    assert (
        harmonize.main(["--image", str(tmp_path / "c.png"), "--mask", str(tmp_path / "m.png"), "--out", str(out)]) == 0
    )
    result = np.asarray(Image.open(out).convert("RGB"))
    assert result.shape == image.shape
    assert np.array_equal(result[mask == 0], image[mask == 0])  # only the foreground changes
