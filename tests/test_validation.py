"""The validation split: carved from the train list by real image, the same wherever and however listed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from giftnet.errors import ConfigError
from giftnet.pipeline.pairs import Pair
from giftnet.pipeline.validation import carve_validation, held_out, image_key
from giftnet.training.config import TrainConfig


def pairs_of(root: Path, n_images: int, per_image: int = 3) -> list[Pair]:
    """iHarmony4-style names: composites a0001_1_1.jpg ... of real image a0001.jpg, in two subsets."""
    out = []
    for i in range(n_images):
        subset = "HCOCO" if i % 2 else "HFlickr"
        for k in range(1, per_image + 1):
            name = f"a{i:04d}_1_{k}"
            out.append(Pair(root / subset / "composite_images" / f"{name}.jpg", root / subset / "masks" / f"a{i:04d}_1.png",
                            root / subset / "real_images" / f"a{i:04d}.jpg", subset, name))  # fmt: skip
    return out


def test_no_real_image_is_in_both_parts_and_the_share_is_about_the_fraction(tmp_path):
    pairs = pairs_of(tmp_path, 2000)
    train, val = carve_validation(pairs, 0.05)
    assert len(train) + len(val) == len(pairs) and set(train).isdisjoint(val)
    assert not {image_key(p) for p in train} & {image_key(p) for p in val}
    images = len({image_key(p) for p in val})
    assert 70 <= images <= 130  # 100 expected (binomial sd ~10)
    assert len(val) == 3 * images  # every composite of a held-out image
    assert [p for p in pairs if p in set(val)] == val  # the list's order is kept


def test_membership_depends_on_the_image_not_on_the_order_location_or_the_rest_of_the_list(tmp_path):
    pairs = pairs_of(tmp_path / "here", 400)
    _, val = carve_validation(pairs, 0.1)
    shuffled = pairs[:]
    random.Random(3).shuffle(shuffled)
    assert {p.name for p in carve_validation(shuffled, 0.1)[1]} == {p.name for p in val}
    moved = pairs_of(tmp_path / "elsewhere" / "copy", 400)
    assert {p.name for p in carve_validation(moved, 0.1)[1]} == {p.name for p in val}
    grown = pairs_of(tmp_path / "here", 800)  # more images listed: the held-out ones stay held out
    assert {p.name for p in val} <= {p.name for p in carve_validation(grown, 0.1)[1]}
    half = pairs[: len(pairs) // 2]
    assert {p.name for p in carve_validation(half, 0.1)[1]} == {p.name for p in val if p in set(half)}


def test_a_larger_fraction_holds_out_a_superset_and_zero_holds_out_nothing(tmp_path):
    pairs = pairs_of(tmp_path, 300)
    small, large = (set(carve_validation(pairs, f)[1]) for f in (0.05, 0.2))
    assert small <= large and len(large) > len(small) > 0
    assert carve_validation(pairs, 0.0) == (pairs, [])
    assert not held_out("HCOCO/a0001.jpg", 0.0)


@pytest.mark.parametrize("bad", [-0.1, 0.6, float("nan")])
def test_the_option_is_bounded_and_has_a_default(bad):
    assert TrainConfig().val_fraction == 0.05
    with pytest.raises(ConfigError, match="--val-fraction must be in"):
        TrainConfig(val_fraction=bad)
