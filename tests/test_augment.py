"""giftnet.pipeline.augment: torchvision's crop sampling, the keep-background rule, determinism, shards."""

import math

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline.augment import (
    KEEP_BACKGROUND_PROB,
    MAX_ATTEMPTS,
    RATIO,
    SCALE,
    epoch_batches,
    epoch_order,
    foreground_area,
    random_resized_crop,
    read_mask,
    sample_crop,
    shard_order,
)
from giftnet.pipeline.pairs import DatasetError


@pytest.mark.parametrize(("height", "width"), [(256, 256), (375, 500), (1000, 31), (31, 1000), (7, 9)])
def test_random_resized_crop_stays_in_bounds_with_torchvision_ranges(height, width):
    rng = np.random.default_rng(0)
    for _ in range(300):
        top, left, h, w = random_resized_crop(height, width, rng, SCALE, RATIO)
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
        assert h > 0 and w > 0
        if (height, width) in ((256, 256), (375, 500)):
            # The sampled area and ratio, up to the rounding of h and w to whole pixels.
            assert SCALE[0] * 0.97 <= h * w / (height * width) <= SCALE[1] + 1e-9
            assert RATIO[0] * 0.97 <= w / h <= RATIO[1] * 1.03


def test_random_resized_crop_fallback_is_torchvision_centre_crop():
    # Ratio 1000/31 is far outside 3/4..4/3: all ten tries fail, torchvision's fallback clamps the ratio.
    rng = np.random.default_rng(1)
    assert random_resized_crop(31, 1000, rng, SCALE, RATIO) == (0, (1000 - 41) // 2, 31, 41)
    assert random_resized_crop(1000, 31, rng, SCALE, RATIO) == ((1000 - 41) // 2, 0, 41, 31)
    # A scale that can never fit: whole image when its ratio is inside the range.
    assert random_resized_crop(100, 100, rng, (1.5, 2.0), RATIO) == (0, 0, 100, 100)


def _corner_mask(h=200, w=200, size=12):
    mask = np.zeros((h, w), np.uint8)
    mask[:size, :size] = 255
    return mask


def test_sample_crop_is_a_pure_function_of_seed_epoch_index():
    mask = _corner_mask()
    kw = {"crop_size": 64, "seed": 3}
    forward = [sample_crop(mask, epoch=e, index=i, **kw) for e in range(3) for i in range(20)]
    backward = [sample_crop(mask, epoch=e, index=i, **kw) for e in reversed(range(3)) for i in reversed(range(20))]
    assert forward == list(reversed(backward))
    other_seed = [sample_crop(mask, crop_size=64, seed=4, epoch=e, index=i) for e in range(3) for i in range(20)]
    assert forward != other_seed
    assert len({(p.top, p.left, p.height, p.width) for p in forward}) > 50


def test_keep_background_rule_statistics():
    """Background-only crops survive only through the 5% draw: P = 0.05 q (1 - r^10) / (1 - r)."""
    mask = _corner_mask()
    n = 1500
    # q: how often a raw crop misses the foreground.
    rng = np.random.default_rng(123)
    q = np.mean(
        [foreground_area(mask, *random_resized_crop(200, 200, rng, SCALE, RATIO), 64) <= 1.0 for _ in range(4000)]
    )
    assert 0.3 < q < 0.9
    crops = [sample_crop(mask, crop_size=64, seed=0, epoch=0, index=i) for i in range(n)]
    no_fg = np.mean([foreground_area(mask, c.top, c.left, c.height, c.width, 64) <= 1.0 for c in crops])
    p = KEEP_BACKGROUND_PROB
    r = q * (1 - p)  # chance that an attempt is rejected
    expected = p * q * (1 - r**MAX_ATTEMPTS) / (1 - r)
    sigma = math.sqrt(expected * (1 - expected) / n)
    assert abs(no_fg - expected) < 3 * sigma + 0.005
    assert no_fg < q / 5
    flips = np.mean([c.flip for c in crops])
    assert abs(flips - 0.5) < 4 * math.sqrt(0.25 / n)


def test_keep_background_gives_up_onto_the_foreground():
    mask = np.zeros((300, 300), np.uint8)
    mask[290, 5] = 255
    for i in range(30):
        c = sample_crop(mask, crop_size=64, seed=0, epoch=0, index=i, keep_background_prob=0.0, max_attempts=2)
        assert mask[c.top : c.top + c.height, c.left : c.left + c.width].any()
    empty = np.zeros((50, 60), np.uint8)
    c = sample_crop(empty, crop_size=32, seed=0, epoch=0, index=0, keep_background_prob=0.0)
    assert c.top + c.height <= 50 and c.left + c.width <= 60


def test_foreground_area_is_in_output_pixels():
    mask = np.zeros((100, 100), np.uint8)
    mask[:50] = 255
    assert foreground_area(mask, 0, 0, 100, 100, 64) == pytest.approx(64 * 64 / 2)
    assert foreground_area(mask, 50, 0, 50, 100, 64) == 0.0


@pytest.mark.parametrize(("num_pairs", "world_size"), [(12, 1), (12, 3), (13, 4), (7, 7)])
def test_shards_are_disjoint_equal_and_cover_the_epoch(num_pairs, world_size):
    for epoch in range(3):
        shards = [shard_order(num_pairs, seed=5, epoch=epoch, rank=r, world_size=world_size) for r in range(world_size)]
        assert len({len(s) for s in shards}) == 1
        flat = np.concatenate(shards)
        assert len(set(flat.tolist())) == len(flat) == num_pairs // world_size * world_size
        if num_pairs % world_size == 0:
            assert sorted(flat.tolist()) == list(range(num_pairs))
    assert not np.array_equal(epoch_order(50, seed=0, epoch=0), epoch_order(50, seed=0, epoch=1))
    assert np.array_equal(epoch_order(50, seed=0, epoch=1), epoch_order(50, seed=0, epoch=1))


def test_dropped_remainder_rotates_over_epochs():
    seen = set()
    for epoch in range(20):
        for r in range(4):
            seen |= set(shard_order(13, seed=0, epoch=epoch, rank=r, world_size=4).tolist())
    assert seen == set(range(13))


@pytest.mark.parametrize("drop_last", [True, False])
def test_epoch_batches_resume_is_the_tail(drop_last):
    kw = {"batch_size": 4, "seed": 1, "epoch": 2, "rank": 1, "world_size": 2, "drop_last": drop_last}
    full = epoch_batches(23, **kw)
    assert len(full) == (2 if drop_last else 3)
    assert all(len(b) == 4 for b in full[:2])
    for k in range(len(full) + 1):
        tail = epoch_batches(23, start_batch=k, **kw)
        assert [b.tolist() for b in tail] == [b.tolist() for b in full[k:]]
    with pytest.raises(ValueError, match="start_batch"):
        epoch_batches(23, start_batch=len(full) + 1, **kw)


def test_read_mask_takes_channel_0_and_names_bad_files(tmp_path):
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[1, 2, 0] = 255
    rgb[3, 3, 1] = 255  # green only: not foreground
    Image.fromarray(rgb).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.shape == (5, 6) and mask.dtype == np.uint8
    assert mask.sum() == 255 and mask[1, 2] == 255
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"bad\.png"):
        read_mask(tmp_path / "bad.png")
