"""giftnet.pipeline.resize reproduces OpenCV's uint8 INTER_LINEAR exactly (what iSSAM's evaluation resizes with)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from giftnet.pipeline.resize import cv2_linear_resize_u8

FIXTURE = Path(__file__).parent / "fixtures" / "resize" / "cv2_inter_linear.npz"


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(FIXTURE, allow_pickle=False) as data:
        return [(data[f"in{i}"], data[f"out{i}"]) for i in range(len(data.files) // 2)]


def test_matches_stored_opencv_outputs_bit_for_bit():
    cases = _cases()
    assert len(cases) >= 8
    for image, expected in cases:
        out = cv2_linear_resize_u8(image, *expected.shape[:2])
        assert out.dtype == np.uint8 and out.shape == expected.shape
        np.testing.assert_array_equal(out, expected, err_msg=f"{image.shape} -> {expected.shape}")


def test_float_bilinear_rounded_is_not_opencv():
    """The reason the module exists: rounding a float resize differs from OpenCV's fixed point."""
    differing = 0
    for image, expected in _cases():
        if image.ndim != 3:
            continue
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        rounded = F.interpolate(x, size=expected.shape[:2], mode="bilinear", align_corners=False)
        rounded = rounded.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        differing += int((rounded != expected).sum())
        assert np.abs(rounded.astype(int) - expected).max() <= 1
    assert differing > 0


def test_same_size_is_a_copy_and_other_dtypes_are_refused():
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    out = cv2_linear_resize_u8(image, 4, 4)
    np.testing.assert_array_equal(out, image)
    assert out is not image
    with pytest.raises(TypeError, match="uint8"):
        cv2_linear_resize_u8(image.astype(np.float32), 2, 2)


def test_matches_opencv_itself_on_random_sizes():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 300, size=2))
        height, width = (int(v) for v in rng.integers(1, 300, size=2))
        image = rng.integers(0, 256, size=(h, w) if trial % 2 else (h, w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(cv2_linear_resize_u8(image, height, width), expected)
