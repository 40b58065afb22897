"""giftnet.pipeline.mask_runs: every window of every kind of mask, exactly as cut from the pixels."""

import numpy as np
import pytest

from giftnet.bench import data_masks
from giftnet.pipeline import mask_runs


def _blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, max(h, w) / 2)
    return np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 255, 0).astype(np.uint8)


def _masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    soft = np.clip(_blob(37, 53, rng).astype(np.float64) + rng.normal(0, 40, (37, 53)), 0, 255).astype(np.uint8)
    return {
        "empty": np.zeros((17, 23), np.uint8),
        "full": np.full((17, 23), 255, np.uint8),
        "one pixel": np.pad(np.full((1, 1), 255, np.uint8), ((5, 7), (3, 11))),
        "blob": _blob(61, 47, rng),
        "soft": soft,
        "noise": rng.integers(0, 256, (9, 13), dtype=np.uint8),
        "1x1": np.full((1, 1), 200, np.uint8),
        "one row": rng.integers(0, 2, (1, 31), dtype=np.uint8) * 255,
        "one column": rng.integers(0, 2, (29, 1), dtype=np.uint8) * 255,
    }


@pytest.mark.parametrize("name", list(_masks()))
def test_every_window_equals_the_cut_pixels(name):
    mask = _masks()[name]
    runs = mask_runs.encode(mask)
    h, w = mask.shape
    assert runs.starts[-1] == h * w and runs.runs == len(runs.values) == len(runs.starts) - 1
    rng = np.random.default_rng(1)
    windows = [(0, 0, h, w), (h - 1, w - 1, 1, 1), (0, w - 1, h, 1), (h - 1, 0, 1, w)]
    windows += [
        (int(t), int(left), int(rng.integers(1, h - t + 1)), int(rng.integers(1, w - left + 1)))
        for t, left in zip(rng.integers(0, h, 40), rng.integers(0, w, 40), strict=True)
    ]
    for top, left, hh, ww in windows:
        got = mask_runs.window(runs, top, left, hh, ww)
        assert got.dtype == np.uint8 and got.shape == (hh, ww)
        np.testing.assert_array_equal(got, mask[top : top + hh, left : left + ww], err_msg=str((top, left, hh, ww)))


def test_runs_never_cross_a_row_and_blobs_are_small():
    mask = np.zeros((4, 5), np.uint8)
    mask[:, :2] = mask[:, 3:] = 255  # each row ends with 255 and the next starts with it: still 3 runs per row
    runs = mask_runs.encode(mask[:, :, None])  # (H, W, 1) accepted
    assert runs.runs == 12
    blob = _blob(512, 512, np.random.default_rng(2))
    assert mask_runs.encode(blob).nbytes < 512 * 512 / 50


def test_bad_input_is_refused_with_its_shape():
    with pytest.raises(ValueError, match="uint8"):
        mask_runs.encode(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        mask_runs.encode(np.zeros((3, 3, 3), np.uint8))
    runs = mask_runs.encode(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="outside the mask 3x4"):
        mask_runs.window(runs, 1, 0, 3, 4)
    assert mask_runs.window(runs, 3, 4, 0, 0).shape == (0, 0)


def test_the_mask_benchmark_checks_and_reports_all_three_ways(capsys):
    assert data_masks.main(["--tiny"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")[1:-1]
    assert row[0].strip() == "synthetic" and int(row[1]) > 0
    figures = [float(v) for v in row[3:7]]
    assert all(v > 0 or np.isnan(v) for v in figures[:1]) and all(v > 0 for v in figures[1:])
