"""giftnet.pipeline.index: the grid decides crops exactly as the full mask does; the index file is kept fresh."""

import math
import os
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline import augment, index, mask_runs, runs_file
from giftnet.pipeline.augment import random_resized_crop, sample_crop
from giftnet.pipeline.index import INDEX_NAME, index_pairs, load_store, stale_entries
from giftnet.pipeline.index_grid import GRID, MaskSummary, grid_sums, sample_crop_indexed
from giftnet.pipeline.pairs import DatasetError
from tests.data_helpers import reference_sample_crop, write_subset


def masks(rng):
    """Masks that make the grid's bounds torn: specks and thin strokes near cell and image edges."""
    out = [np.zeros((40, 50), np.uint8), np.full((33, 47), 255, np.uint8), np.zeros((7, 9), np.uint8)]
    out[2][3, 4] = 255
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(20, 300, size=2))
        m = np.zeros((h, w), np.uint8)
        kind = rng.integers(0, 4)
        if kind == 0:  # a few specks, anywhere
            for _ in range(int(rng.integers(1, 6))):
                m[rng.integers(0, h), rng.integers(0, w)] = 255
        elif kind == 1:  # a small blob near a border
            y, x = int(rng.integers(0, max(1, h // 6))), int(rng.integers(0, w))
            m[y : y + int(rng.integers(1, 6)), x : x + int(rng.integers(1, 6))] = 255
        elif kind == 2:  # soft values (JPEG-like), a thin vertical stroke
            x = int(rng.integers(0, w))
            m[:, x] = rng.integers(0, 256, size=h)
        else:  # an object of a few percent of the image
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            m[y : y + h // 5, x : x + w // 6] = 255
        out.append(m)
    return out


def test_grid_sums_are_cell_sums():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 256, size=(37, 101), dtype=np.uint8)
    sums = grid_sums(m)
    ys, xs = (np.arange(GRID + 1) * 37) // GRID, (np.arange(GRID + 1) * 101) // GRID
    want = [[int(m[ys[i] : ys[i + 1], xs[j] : xs[j + 1]].sum()) for j in range(GRID)] for i in range(GRID)]
    assert sums.dtype == np.uint32 and sums.tolist() == want
    assert int(sums.sum()) == int(m.sum())


def test_bounds_bracket_the_window_sum():
    rng = np.random.default_rng(1)
    for m in masks(rng)[:20]:
        s = MaskSummary.of(m)
        for _ in range(50):
            top, left, h, w = random_resized_crop(*m.shape, rng, (0.05, 1.0), (0.5, 2.0))
            low, high = s.bounds(top, left, h, w)
            quick_low, quick_high = s.quick_bounds(top, left, h, w)
            total = int(m[top : top + h, left : left + w].sum())
            assert quick_low <= low <= total <= high <= quick_high


def test_indexed_crops_equal_todays_crops_and_decode_rarely():
    rng = np.random.default_rng(2)
    decoded = total = 0
    for k, m in enumerate(masks(rng)):
        s = MaskSummary.of(m)
        for crop_size in (32, 256):
            for epoch in range(6):
                want = reference_sample_crop(m, crop_size=crop_size, seed=7, epoch=epoch, index=k)
                assert sample_crop(m, crop_size=crop_size, seed=7, epoch=epoch, index=k) == want
                got, d = sample_crop_indexed(s, lambda m=m: m, crop_size=crop_size, seed=7, epoch=epoch, index=k)
                assert got == want, (k, crop_size, epoch)
                decoded, total = decoded + d, total + 1
    # These masks are built to be hard for a grid; still most crops are decided without the mask.
    assert 0 < decoded < total // 3


def test_indexed_fallback_uses_the_stored_median():
    m = np.zeros((200, 200), np.uint8)
    m[190:, 190:] = 255  # a corner object: many windows miss it
    s = MaskSummary.of(m)
    for i in range(40):
        want = reference_sample_crop(m, crop_size=64, seed=0, epoch=0, index=i)
        got, _ = sample_crop_indexed(s, lambda: m, crop_size=64, seed=0, epoch=0, index=i)
        assert got == want


def test_index_file_is_built_once_and_rebuilt_per_changed_file(tmp_path):
    pairs = write_subset(tmp_path / "Sub")
    first = index_pairs(pairs, workers=1)
    path = tmp_path / "Sub" / INDEX_NAME
    assert first.files == [path] and first.rebuilt == 18
    assert first.shapes == [read.shape for read in (augment.read_mask(p.mask) for p in pairs)]
    assert_runs_are_the_masks(first, pairs)
    assert first.native == [(True, True)] * 6  # plain JPEGs: DALI decodes them as stored
    with np.load(path, allow_pickle=False) as z:  # plain arrays: no pickle needed to read it
        assert z["sums"].shape == (6, GRID, GRID) and z["paths"].dtype.kind == "U"
        assert int(z["format"]) == 3 and z["native"].dtype == bool and z["native"].sum() == 12
        assert z["runs_at"].shape == (6, 2) and (tmp_path / "Sub" / str(z["runs_file"])).is_file()
    assert all(isinstance(w, tuple) for w in first.runs.where)  # memory-mapped from the runs file
    again = index_pairs(pairs, workers=1)
    assert again.rebuilt == 0 and again.files == []
    assert stale_entries(pairs) == (0, 18)
    # Change one mask: only its entry is rebuilt, and the new pixels are what the index holds.
    m = np.zeros_like(augment.read_mask(pairs[2].mask))
    m[:5, :5] = 255
    Image.fromarray(m).save(pairs[2].mask)
    os.utime(pairs[2].mask, ns=(1, 1))
    assert stale_entries(pairs) == (1, 18)
    third = index_pairs(pairs, workers=1)
    assert third.rebuilt == 1
    assert int(third.masks[2].sums.sum()) == 25 * 255 and third.masks[2].median == (2, 2)
    assert len(load_store(path)) == 18
    assert_runs_are_the_masks(third, pairs)
    assert len(runs_files(tmp_path / "Sub")) == 1  # the older runs file is gone with the index naming it
    # A photo rewritten as a 16-bit PNG under the same name: its entry is rebuilt, no longer native.
    img = np.asarray(Image.open(pairs[4].real))
    Image.fromarray(img[:, :, 0].astype(np.uint16) * 257).save(pairs[4].real, format="PNG")
    fourth = index_pairs(pairs, workers=1)
    assert fourth.rebuilt == 1 and fourth.native[4] == (True, False)


def runs_files(folder):
    return sorted(folder.glob(f"{runs_file.PREFIX}*.bin"))


def assert_runs_are_the_masks(idx, pairs):
    for k, pair in enumerate(pairs):
        mask = augment.read_mask(pair.mask)
        assert np.array_equal(mask_runs.window(idx.runs[k], 0, 0, *mask.shape), mask), pair.mask


def test_the_runs_table_pickles_without_the_runs(tmp_path):
    pairs = write_subset(tmp_path / "Sub")
    idx = index_pairs(pairs, workers=1)
    blob = pickle.dumps(idx.runs)
    assert len(blob) < 1000 and runs_files(tmp_path / "Sub")[0].stat().st_size > 6 * 100
    assert_runs_are_the_masks(type(idx)(**{**idx.__dict__, "runs": pickle.loads(blob)}), pairs)


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped", "replaced"])
def test_a_bad_runs_file_rebuilds_the_masks_entries_only(tmp_path, damage):
    pairs = write_subset(tmp_path / "Sub", n=4)
    index_pairs(pairs, workers=1)
    (bad,) = runs_files(tmp_path / "Sub")
    data = bytearray(bad.read_bytes())
    if damage == "missing":
        bad.unlink()
    elif damage == "truncated":
        bad.write_bytes(data[:-3])
    elif damage == "flipped":  # the same size, one value changed: only the content hash tells
        data[-1] ^= 0xFF
        bad.write_bytes(data)
    else:  # a file of the right size and header but other content (another dataset's runs)
        data[runs_file.HEADER :] = bytes(len(data) - runs_file.HEADER)
        bad.write_bytes(data)
    with pytest.warns(UserWarning, match="rebuilding the masks' entries"):
        assert stale_entries(pairs) == (4, 12)
    with pytest.warns(UserWarning, match="rebuilding the masks' entries"):
        idx = index_pairs(pairs, workers=1)
    assert idx.rebuilt == 4  # the photos' entries are kept
    assert_runs_are_the_masks(idx, pairs)
    assert stale_entries(pairs) == (0, 12)


def test_an_index_of_the_previous_format_is_rebuilt_whole(tmp_path):
    pairs = write_subset(tmp_path / "Sub", n=2)
    index_pairs(pairs, workers=1)
    path = tmp_path / "Sub" / INDEX_NAME
    with np.load(path, allow_pickle=False) as z:
        old = {k: z[k] for k in z.files if k != "native"} | {"format": np.int64(1)}
    with path.open("wb") as f:
        np.savez_compressed(f, **old)
    assert load_store(path) == {}
    assert index_pairs(pairs, workers=1).rebuilt == 6


def test_index_refuses_size_mismatch_and_missing_files(tmp_path):
    pairs = write_subset(tmp_path / "Sub", n=2)
    Image.new("RGB", (11, 13)).save(pairs[1].real)
    with pytest.raises(DatasetError, match=r"a1\.jpg is 11x13"):
        index_pairs(pairs, workers=1)
    pairs[0].mask.unlink()
    with pytest.raises(DatasetError, match=r"a0_1\.png: file does not exist"):
        index_pairs(pairs, workers=1)


def test_unreadable_index_is_rebuilt_and_unwritable_folder_kept_in_memory(tmp_path, monkeypatch):
    pairs = write_subset(tmp_path / "Sub", n=2)
    path = tmp_path / "Sub" / INDEX_NAME
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable dataset index"):
        assert index_pairs(pairs, workers=1).rebuilt == 6
    assert len(load_store(path)) == 6
    path.unlink()

    def read_only(target):
        raise PermissionError(13, "Permission denied", str(target))

    for module in (index, runs_file):  # a read-only dataset (tests may run as root)
        monkeypatch.setattr(module, "atomic_writer", read_only)
    for old in runs_files(tmp_path / "Sub"):
        old.unlink()
    with pytest.warns(UserWarning, match="cannot write the dataset index"):
        idx = index_pairs(pairs, workers=1)
    assert idx.rebuilt == 6 and idx.files == [] and not path.exists() and runs_files(tmp_path / "Sub") == []
    assert idx.masks[0].shape == pairs_shape(pairs[0])
    assert all(isinstance(w, mask_runs.MaskRuns) for w in idx.runs.where)  # kept in memory
    assert_runs_are_the_masks(idx, pairs)


def pairs_shape(pair):
    return augment.read_mask(pair.mask).shape


def test_any_mask_file_is_held_as_read_masks_pixels(tmp_path):
    pairs = write_subset(tmp_path / "Sub", n=3)
    m = augment.read_mask(pairs[0].mask)
    Image.fromarray(np.stack([m, m // 2, m // 3], axis=2)).save(pairs[0].mask)  # RGB mask: channel 0
    soft = (np.random.default_rng(0).random(pairs_shape(pairs[1])) * 255).astype(np.uint8)
    Image.fromarray(soft.astype(np.uint16) * 257).save(pairs[1].mask)  # 16-bit soft mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idx = index_pairs(pairs, workers=1)
    assert math.isclose(float(idx.masks[0].sums.sum()), float(m.sum()))
    assert_runs_are_the_masks(idx, pairs)


def test_checker_builds_then_checks_the_index(tmp_path, capsys):
    from giftnet.pipeline.check import main

    pairs = write_subset(tmp_path / "Sub", n=3)
    (tmp_path / "Sub" / "Sub_train.txt").write_text("".join(f"{p.composite.name}\n" for p in pairs))
    assert main([str(tmp_path), "--quick", "--split", "train"]) == 0
    assert "index: none yet" in capsys.readouterr().out
    assert main([str(tmp_path), "--index", "--split", "train"]) == 0
    assert "index: 9 entr(ies) built" in capsys.readouterr().out and (tmp_path / "Sub" / INDEX_NAME).is_file()
    assert main([str(tmp_path), "--quick", "--split", "train"]) == 0
    assert "index: 0 of 9 file entries missing or out of date" in capsys.readouterr().out
    os.utime(pairs[0].real, ns=(5, 5))
    assert main([str(tmp_path), "--quick", "--split", "train"]) == 0
    assert "index: 1 of 9 file entries missing or out of date (--index refreshes)" in capsys.readouterr().out
