"""Metrics against values computed by hand."""

import math

import pytest
import torch

from giftnet.metrics import data_range, fmse, fpsnr, fssim, image_metrics, mse, psnr, ssim_map, to_255


def test_mse_fmse_psnr_by_hand():
    gt = torch.full((1, 3, 4, 4), 200.0)
    pred = gt.clone()
    pred[:, :, :2, :] += 10.0  # top half off by 10 in every channel
    mask = torch.zeros(1, 1, 4, 4)
    mask[:, :, 0, :] = 1.0  # foreground: first row (all wrong)
    mask[:, :, 3, 0] = 0.5  # a soft pixel that is right
    assert mse(pred, gt).item() == pytest.approx(50.0)  # half the pixels have error 100
    # fMSE = sum(mask * err) / (3 * sum(mask)) = (4 * 3 * 100) / (3 * 4.5)
    assert fmse(pred, gt, mask).item() == pytest.approx(1200.0 / 13.5)
    assert psnr(pred, gt).item() == pytest.approx(10 * math.log10(200.0**2 / 50.0), rel=1e-6)
    assert psnr(pred, gt, peak="255").item() == pytest.approx(10 * math.log10(255.0**2 / 50.0), rel=1e-6)
    assert fpsnr(pred, gt, mask).item() == pytest.approx(10 * math.log10(200.0**2 * 13.5 / 1200.0), rel=1e-6)
    assert fpsnr(pred, gt, mask, peak="255").item() == pytest.approx(
        10 * math.log10(255.0**2 * 13.5 / 1200.0), rel=1e-6
    )


def test_ssim_of_constant_images_by_hand():
    pred, gt = torch.full((1, 3, 16, 16), 100.0), torch.full((1, 3, 16, 16), 120.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)  # variances and covariance are 0
    interior = ssim_map(pred, gt)[:, :, 3:-3, 3:-3]
    torch.testing.assert_close(interior, torch.full_like(interior, expected, dtype=torch.float64))
    mask = torch.zeros(1, 1, 16, 16)
    mask[:, :, 5:10, 5:10] = 1
    assert fssim(pred, gt, mask, value_range="255").item() == pytest.approx(expected)


def test_fssim_data_range_is_the_predictions_max_minus_min_by_hand():
    """CDTNet's convention: L = pred.max() - pred.min(), so C1 = (0.01 L)^2; C2 cancels on flat patches."""
    pred, gt = torch.full((1, 3, 24, 24), 100.0), torch.full((1, 3, 24, 24), 120.0)
    pred[0, 1, 0, 0] = 150.0  # far from the mask: only the range changes, L = 50
    mask = torch.zeros(1, 1, 24, 24)
    mask[:, :, 12:18, 12:18] = 1
    c1 = (0.01 * 50.0) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
    assert data_range(pred, "pred").item() == 50.0
    assert fssim(pred, gt, mask).item() == pytest.approx(expected, rel=1e-10)  # the default
    assert fssim(pred, gt, mask, value_range="pred").item() == pytest.approx(expected, rel=1e-10)
    c1_255 = (0.01 * 255.0) ** 2
    assert fssim(pred, gt, mask, value_range="255").item() == pytest.approx(
        (2 * 100 * 120 + c1_255) / (100**2 + 120**2 + c1_255), rel=1e-10
    )
    # the two conventions really differ here (a smaller L punishes the same offset more)
    assert fssim(pred, gt, mask, value_range="pred").item() < fssim(pred, gt, mask, value_range="255").item()


def test_fssim_range_of_a_flat_prediction_is_one_grey_level():
    flat = torch.full((2, 3, 8, 8), 7.0)
    assert data_range(flat, "pred").tolist() == [1.0, 1.0]
    assert torch.isfinite(fssim(flat, flat + 1, torch.ones(2, 1, 8, 8))).all()


def test_metric_conventions_are_checked():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="peak"):
        psnr(x, x, peak="1")
    with pytest.raises(ValueError, match="data range"):
        fssim(x, x, torch.ones(1, 1, 8, 8), value_range="max")


def test_identical_images_are_perfect_and_per_image():
    gt = torch.rand(3, 3, 16, 16) * 255
    pred = gt.clone()
    pred[1] = (pred[1] + 20).clamp(0, 255)
    mask = torch.ones(3, 1, 16, 16)
    m = image_metrics(pred, gt, mask)
    assert all(v.shape == (3,) for v in m.values())
    assert set(m) == {"mse", "fmse", "psnr", "fpsnr", "fssim"}
    assert m["mse"][0].item() == 0 and m["fmse"][0].item() == 0 and m["fssim"][0].item() == pytest.approx(1.0)
    assert m["mse"][1].item() > 0 and m["fssim"][1].item() < 1
    assert m["psnr"][0] > m["psnr"][1]


def test_empty_mask_gives_finite_metrics():
    gt, pred = torch.rand(2, 3, 8, 8) * 255, torch.rand(2, 3, 8, 8) * 255
    m = image_metrics(pred, gt, torch.zeros(2, 1, 8, 8))
    assert all(torch.isfinite(v).all() for v in m.values())
    assert m["fmse"].eq(0).all()


def test_to_255_inverts_imagenet_normalisation_and_clamps():
    from giftnet.pipeline.pairs import IMAGENET_MEAN, IMAGENET_STD

    img = torch.tensor([0.0, 127.5, 255.0])[None, None, :, None].expand(1, 3, 3, 1) / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(to_255((img - mean) / std), img * 255.0, atol=1e-4, rtol=0)
    assert to_255(torch.full((1, 3, 2, 2), 100.0)).max().item() == 255.0


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="pred"):
        mse(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        fmse(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
