"""giftnet.harmonize: library function and CLI on odd sizes, RGBA, grayscale, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from giftnet.config import ModelConfig
from giftnet.harmonize import harmonize_image, main
from giftnet.model import GiftNet
from giftnet.pipeline.pairs import IMAGENET_STD
from giftnet.weights import save_weights

H, W = 77, 101  # odd, not multiples of 8


@pytest.fixture(scope="module")
def model() -> GiftNet:
    torch.manual_seed(1)
    return GiftNet(ModelConfig(base_channels=8)).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, model: GiftNet) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(model, path)
    return path


def composite(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx * yy) / (h * w)], axis=2) * 150 + 40
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def ellipse_mask(h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2) <= 1).astype(np.float32)


class Shift(nn.Module):
    """A "model" that adds a constant per channel (in 0-255 units) to its input everywhere."""

    def __init__(self, shift_255: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(shift_255) / 255.0 / torch.tensor(IMAGENET_STD))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        assert image.shape[-1] % 8 == 0 and image.shape[-2] % 8 == 0
        return {"images": image + self.shift.view(1, 3, 1, 1)}


@pytest.mark.parametrize("full_res", [False, True])
def test_background_is_bit_identical(model: GiftNet, full_res: bool) -> None:
    comp, mask = composite(), ellipse_mask()
    out = harmonize_image(model, comp, mask, size=64, full_res=full_res, device="cpu")
    assert out.shape == comp.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask == 0], comp[mask == 0])
    assert np.abs(out[mask == 1].astype(int) - comp[mask == 1]).mean() > 1.0  # the random net changes the object


@pytest.mark.parametrize("full_res", [False, True])
def test_change_is_carried_to_full_resolution(full_res: bool) -> None:
    """A constant change at the network's size is exactly that change inside a soft mask."""
    comp = composite(seed=3)
    mask = ellipse_mask() * 0.5
    shift = (6.0, -4.0, 2.0)  # times 0.5: whole numbers, so no rounding ties
    out = harmonize_image(Shift(shift), comp, mask, size=40, full_res=full_res)
    expected = np.clip(np.rint(comp + mask[:, :, None] * np.array(shift)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_default_mode_at_network_size_equals_full_res(model: GiftNet) -> None:
    comp, mask = composite(64, 64), ellipse_mask(64, 64)
    a = harmonize_image(model, comp, mask, size=64)
    b = harmonize_image(model, comp, mask, full_res=True)
    np.testing.assert_array_equal(a, b)


def test_grayscale_and_rgba_arrays(model: GiftNet) -> None:
    gray = composite()[:, :, 0]
    out = harmonize_image(model, gray, ellipse_mask(), size=32)
    assert out.shape == (H, W, 3)
    rgba = np.dstack([composite(), np.full((H, W), 7, np.uint8)])
    np.testing.assert_array_equal(
        harmonize_image(model, rgba, ellipse_mask(), size=32),
        harmonize_image(model, rgba[:, :, :3], ellipse_mask(), size=32),
    )


def test_mask_of_another_size_warns(model: GiftNet) -> None:
    with pytest.warns(UserWarning, match="resized"):
        out = harmonize_image(model, composite(), ellipse_mask(40, 50), size=32)
    assert out.shape == (H, W, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        harmonize_image(model, composite(), ellipse_mask() * 2, size=32)


def test_model_mode_restored(model: GiftNet) -> None:
    model.train()
    try:
        harmonize_image(model, composite(), ellipse_mask(), size=32)
        assert model.training
    finally:
        model.eval()


def test_cli_file_mode_rgba_and_16bit_mask(weights: Path, tmp_path: Path, model: GiftNet) -> None:
    comp, mask = composite(), ellipse_mask()
    alpha = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    Image.fromarray(np.dstack([comp, alpha]), "RGBA").save(tmp_path / "comp.png")
    Image.fromarray((mask * 65535).astype(np.uint16)).save(tmp_path / "mask.png")  # 16-bit gray
    assert Image.open(tmp_path / "mask.png").mode.startswith("I")
    out = tmp_path / "sub" / "out.png"
    argv = ["--image", str(tmp_path / "comp.png"), "--mask", str(tmp_path / "mask.png"), "--weights", str(weights)]
    assert main([*argv, "--out", str(out), "--size", "32", "--device", "cpu"]) == 0
    got = Image.open(out)
    assert got.mode == "RGBA" and got.size == (W, H)
    arr = np.asarray(got)
    np.testing.assert_array_equal(arr[:, :, 3], alpha)  # alpha re-attached unchanged
    np.testing.assert_array_equal(arr[:, :, :3], harmonize_image(model, comp, mask, size=32))


def test_cli_folder_mode_grayscale_and_mask_mismatch(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images, masks, out = tmp_path / "img", tmp_path / "msk", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    gray = composite()[:, :, 1]
    Image.fromarray(gray, "L").save(images / "g.png")
    Image.fromarray(composite(64, 48)).save(images / "c.jpg")
    Image.fromarray((ellipse_mask() * 255).astype(np.uint8)).save(masks / "g.png")
    Image.fromarray((ellipse_mask(32, 24) * 255).astype(np.uint8)).convert("RGB").save(masks / "c.png")
    argv = ["--image", str(images), "--mask", str(masks), "--weights", str(weights), "--out", str(out)]
    assert main([*argv, "--size", "32", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "c.png" in err and "resized" in err and "g.png" not in err
    g = np.asarray(Image.open(out / "g.png"))
    assert g.shape == (H, W, 3)
    background = ellipse_mask() == 0
    np.testing.assert_array_equal(g[background], np.repeat(gray[:, :, None], 3, axis=2)[background])
    assert Image.open(out / "c.png").size == (48, 64)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing_weights", "weights file does not exist"),
        ("bad_weights", "not a readable safetensors file"),
        ("missing_image", "--image does not exist"),
        ("bad_image", "not an image file"),
        ("unmatched_mask", "no mask with the stem"),
    ],
)
def test_cli_bad_input(case: str, expect: str, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image, mask, w = tmp_path / "c.png", tmp_path / "m.png", weights
    Image.fromarray(composite(16, 16)).save(image)
    Image.fromarray((ellipse_mask(16, 16) * 255).astype(np.uint8)).save(mask)
    if case == "missing_weights":
        w = tmp_path / "absent.safetensors"
    elif case == "bad_weights":
        w = tmp_path / "bad.safetensors"
        w.write_bytes(b"\x00" * 40)
    elif case == "missing_image":
        image = tmp_path / "absent.png"
    elif case == "bad_image":
        image.write_bytes(b"this is no png")
    elif case == "unmatched_mask":
        (tmp_path / "i").mkdir()
        (tmp_path / "k").mkdir()
        Image.fromarray(composite(16, 16)).save(tmp_path / "i" / "x.png")
        Image.fromarray(composite(16, 16)).save(tmp_path / "k" / "y.png")
        image, mask = tmp_path / "i", tmp_path / "k"
    rc = main(["--image", str(image), "--mask", str(mask), "--weights", str(w), "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: " in err.splitlines()[0] and expect in err and "Traceback" not in err
    if case in ("missing_weights", "bad_weights"):
        assert str(w) in err
    if case in ("missing_image", "bad_image"):
        assert str(image) in err


def test_module_entry_point_exit_status(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    Image.fromarray(composite(16, 16)).save(tmp_path / "c.png")
    argv = ["--image", str(tmp_path / "c.png"), "--mask", str(tmp_path / "c.png"), "--weights", str(bad)]
    proc = subprocess.run(
        [sys.executable, "-m", "giftnet.harmonize", *argv, "--out", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"harmonize: error: {bad}: ")
