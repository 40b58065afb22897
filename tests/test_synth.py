"""Demo dataset builder: iHarmony4 layout, passes the checker, deterministic, changes only the foreground."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline.builders.cc_matching import transfer
from giftnet.pipeline.builders.colour import (
    bundled_matrices,
    histogram_match,
    illumination_transfer,
    lab_transfer,
    tone_change,
)
from giftnet.pipeline.builders.synth import SUBSET, build_demo_dataset, main
from giftnet.pipeline.builders.synth_masks import _DRAW, MASK_SHAPES, MAX_AREA, MIN_AREA, random_mask
from giftnet.pipeline.check import check_dataset
from giftnet.pipeline.ihd import read_pairs, split_name
from giftnet.pipeline.images import read_mask, read_rgb

N_TRAIN, N_TEST, SIZE = 10, 4, 48


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=7)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_names_and_counts(demo):
    subset = demo / SUBSET
    assert {p.name for p in subset.iterdir()} >= {"composite_images", "masks", "real_images", "HSynth_train.txt"}
    train, test = read_pairs(demo, split="train"), read_pairs(demo, split="test")
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    assert {p.real for p in train}.isdisjoint({p.real for p in test})
    for pair in train + test:
        real_id, mask_id = split_name(pair.name)
        assert "-" in real_id and pair.real.stem == real_id and pair.mask.stem == mask_id
        assert min(Image.open(pair.real).size) == SIZE
    # the shipped photos are many: test pairs come from whole photos that training never saw
    photo = lambda p: p.name.rsplit("-", 1)[0]  # noqa: E731 - NAME-trNNNNN_k_j: the photo's tag
    assert {photo(p) for p in test}.isdisjoint({photo(p) for p in train})


def test_region_split_holds_out_pixels_and_many_photos_hold_out_whole_photos():
    from giftnet.pipeline.builders.synth_sources import Photo, cut_region, split_photos

    image = np.arange(10 * 20).reshape(10, 20)
    train, test = cut_region(image, "train"), cut_region(image, "test")
    assert train.shape == (10, 14) and test.shape == (10, 6)
    assert set(train.ravel()).isdisjoint(test.ravel())
    assert np.array_equal(np.concatenate([train, test], axis=1), image)
    assert cut_region(image.T, "test").shape == (6, 10)
    few = split_photos([Photo("a", "a", lambda: image), Photo("b", "b", lambda: image)])
    assert few["train"][0].load().shape == (10, 14) and few["test"][1].load().shape == (10, 6)
    many = split_photos([Photo(f"p{i}", f"p{i}", lambda: image) for i in range(40)])
    assert {p.group for p in many["train"]}.isdisjoint({p.group for p in many["test"]})
    assert many["test"][0].load().shape == (10, 20)


def test_passes_the_checker(demo):
    assert check_dataset(demo) == []


def test_composite_differs_from_real_only_inside_the_mask(demo):
    for pair in read_pairs(demo, split="all"):
        composite = read_rgb(pair.composite).astype(int)
        real = read_rgb(pair.real).astype(int)
        mask = read_mask(pair.mask) > 0.5
        diff = np.abs(composite - real).max(axis=2)
        h, w = mask.shape
        blocks = np.zeros((-(-h // 8) * 8, -(-w // 8) * 8), dtype=bool)
        blocks[:h, :w] = mask
        touched = blocks.reshape(blocks.shape[0] // 8, 8, -1, 8).any(axis=(1, 3))
        touched = np.repeat(np.repeat(touched, 8, axis=0), 8, axis=1)[:h, :w]
        assert diff[~touched].max() == 0, pair.name  # JPEG blocks away from the mask are bit-identical
        # JPEG ringing (quality 95) only in the blocks on the mask's edge: ~4.5 levels there, ~0.1 over the
        # whole background at 256 px (more at this tiny size, where edge blocks are a larger share)
        # (so the background as a whole changes only by that times the edge blocks' share of it)
        assert diff[touched & ~mask].mean() < 8.0, pair.name
        fmse = np.mean((composite[mask] - real[mask]) ** 2)
        assert fmse > 50.0, pair.name


def test_deterministic_and_reused(demo, tmp_path):
    again = build_demo_dataset(tmp_path / "again", n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=7)
    assert _files(again / SUBSET) == _files(demo / SUBSET)
    manifest = demo / SUBSET / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert build_demo_dataset(demo, n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=7) == demo
    assert manifest.stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = build_demo_dataset(tmp_path / "other", n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=8)
    assert _files(other / SUBSET) != _files(demo / SUBSET)


def test_rebuilds_when_arguments_change_or_files_vanish(tmp_path):
    root = build_demo_dataset(tmp_path, n_train=3, n_test=1, size=32, seed=0)
    victim = next((root / SUBSET / "composite_images").iterdir())
    victim.unlink()
    build_demo_dataset(tmp_path, n_train=3, n_test=1, size=32, seed=0)
    assert victim.is_file()
    build_demo_dataset(tmp_path, n_train=4, n_test=1, size=32, seed=0)
    assert len(read_pairs(root)) == 4
    assert [p.name for p in tmp_path.iterdir()] == [SUBSET]  # no scratch folders left behind


def test_folder_source_with_annotated_masks(tmp_path):
    from skimage import data

    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    (photos / "masks").mkdir()
    for i, array in enumerate((data.chelsea(), data.coffee(), data.rocket())):
        image = Image.fromarray(array).resize((64, 64))
        image.save(photos / "images" / f"image_{i}.jpg")
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 8:32] = 255  # in the training part (the first 70% of the width)
        mask[16:48, 50:60] = 255  # and in the held-out part
        Image.fromarray(mask).save(photos / "masks" / f"image_{i}.png")
    assert main(["--out", str(tmp_path / "out"), "--source", str(photos), "--n-train", "4", "--n-test", "2"]) == 0
    root = tmp_path / "out"
    assert check_dataset(root) == []
    rows = (root / SUBSET / "pairs.csv").read_text().splitlines()[1:]
    assert len(rows) == 6 and all(row.split(",")[3] == "annotated" for row in rows)
    assert all(p.name.startswith("image-") for p in read_pairs(root, split="all"))  # '_' in photo names replaced


def test_colour_changes():
    rng = np.random.default_rng(0)
    fg = rng.integers(60, 120, size=(500, 3), dtype=np.uint8)
    ref = rng.integers(150, 250, size=(400, 3), dtype=np.uint8)
    moved = lab_transfer(fg, ref, 1.0).astype(float)
    assert np.abs(moved.mean(0) - ref.mean(0)).max() < 8.0
    np.testing.assert_array_equal(lab_transfer(fg, ref, 0.0).astype(int), fg.astype(int))  # within rounding
    matched = histogram_match(fg, ref, 1.0).astype(float)
    np.testing.assert_allclose(
        np.percentile(matched, [10, 50, 90], axis=0), np.percentile(ref, [10, 50, 90], axis=0), atol=3
    )
    assert np.abs(tone_change(fg, rng).astype(float) - fg).mean() > 0
    matrices = bundled_matrices()
    assert len(matrices) == 16 and all(t.shape == r.shape == (3, 11) for t, r in matrices.values())
    pixels, what = illumination_transfer(fg, np.random.default_rng(1))
    a, b = what.split("->")
    np.testing.assert_array_equal(pixels, transfer(fg, matrices[a][0], matrices[b][1]))


@pytest.mark.parametrize("shape", MASK_SHAPES)
def test_procedural_masks(shape):
    rng = np.random.default_rng(5)
    for _ in range(5):
        mask = _DRAW[shape](40, 56, rng)
        assert mask.dtype == bool and mask.shape == (40, 56) and mask.any()
    mask, name = random_mask(40, 56, rng)
    assert name in MASK_SHAPES and MIN_AREA <= mask.mean() <= MAX_AREA


def test_cli_reports_bad_arguments(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--source", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
    assert main(["--out", str(tmp_path), "--size", "8"]) == 2
    assert "--size must be at least 16" in capsys.readouterr().err


def _small_photos(folder: Path, side: int) -> Path:
    from skimage import data

    folder.mkdir(parents=True)
    for i, array in enumerate((data.chelsea(), data.coffee(), data.rocket())):
        Image.fromarray(array).resize((side, side)).save(folder / f"p{i}.jpg")
    return folder


def test_cli_warns_when_photos_are_upscaled(tmp_path, capsys):
    photos = _small_photos(tmp_path / "photos", 80)  # three photos: cut into 56 px train and 24 px test regions
    args = ["--source", str(photos), "--n-train", "2", "--n-test", "1"]
    assert main(["--out", str(tmp_path / "big"), *args, "--size", "48"]) == 0
    err = capsys.readouterr().err
    assert "3 of 3 photos are smaller than --size 48" in err and "upscaled" in err
    assert main(["--out", str(tmp_path / "small"), *args, "--size", "20"]) == 0  # 24 * 0.35 < 20: small crops
    err = capsys.readouterr().err
    assert "smaller than" not in err and "more photos are upscaled when a small crop" in err


def test_cli_refuses_to_overwrite_a_dataset_built_with_other_arguments(tmp_path, capsys):
    photos = _small_photos(tmp_path / "photos", 48)
    args = ["--out", str(tmp_path / "out"), "--source", str(photos), "--n-test", "1", "--size", "16"]
    assert main([*args, "--n-train", "2"]) == 0
    before = (tmp_path / "out" / SUBSET / "manifest.json").read_bytes()
    assert main([*args, "--n-train", "3"]) == 2
    err = capsys.readouterr().err
    assert "built with other arguments" in err and "n_train: 2 -> 3" in err and "--overwrite" in err
    assert (tmp_path / "out" / SUBSET / "manifest.json").read_bytes() == before  # untouched
    assert main([*args, "--n-train", "2"]) == 0  # the same arguments: reused
    assert main([*args, "--n-train", "3", "--overwrite"]) == 0
    assert len(read_pairs(tmp_path / "out")) == 3


def test_built_in_data_is_the_shipped_real_photos(demo):
    from giftnet.pipeline.builders.synth_sources import bundled_folder, bundled_photos

    folder = bundled_folder()
    photos = bundled_photos()
    assert len(photos) == 300 and all(p.load_mask is not None for p in photos)
    assert (folder / "LICENSE").is_file() and "MIT" in (folder / "LICENSE").read_text()
    assert "iHarmony4" in (folder / "SOURCE.txt").read_text()
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 4_000_000  # the repo stays small
    rows = (demo / SUBSET / "pairs.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[0].startswith("le-") for row in rows)
    assert sum(row.split(",")[3] == "annotated" for row in rows) >= len(rows) // 2  # real object masks
