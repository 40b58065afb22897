"""giftnet.pipeline.feed_files and the TrainFeed built on it: batch reads into reused buffers, plain masks
decoded from their bytes, and crops still exactly today's (torn grids and re-encoded masks included)."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline import augment, feed_files
from giftnet.pipeline.augment import read_mask
from giftnet.pipeline.dali_feed import TrainFeed
from giftnet.pipeline.feed_files import Arenas, plain_mask, read_files
from giftnet.pipeline.index import index_pairs
from giftnet.pipeline.pairs import DatasetError, Pair
from tests.data_helpers import reference_sample_crop
from tests.test_index import masks as hard_masks


def test_a_buffer_is_reused_only_once_no_view_of_it_is_alive():
    arenas = Arenas()
    first = arenas.take(1000)
    view = first[10:20]
    del first
    second = arenas.take(1000)  # `view` keeps the first buffer busy
    assert not np.shares_memory(second, view)
    del second
    third = arenas.take(1000)
    assert not np.shares_memory(third, view) and len(arenas) == 2
    del view, third
    again = arenas.take(1000)
    assert again is arenas._pool[0] and len(arenas) == 2
    big = arenas.take(10**6)  # too small to fit: a free one is replaced, the pool does not grow
    assert big.size >= 10**6 and len(arenas) == 2


def test_read_files_gives_each_files_bytes_and_a_kept_batch_is_never_overwritten(tmp_path):
    rng = np.random.default_rng(0)
    batches = []
    for b in range(6):
        paths = []
        for k in range(4):
            path = tmp_path / f"f{b}_{k}.bin"
            path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 300_000)), dtype=np.uint8).tobytes())
            paths.append(str(path))
        batches.append((paths, read_files(paths, feed_files.ARENAS)))  # every batch kept alive
    for paths, got in batches:
        assert [g.tobytes() for g in got] == [Path(p).read_bytes() for p in paths]
        assert all(g.base is got[0].base is not None for g in got)  # one buffer per batch
    dropped = read_files(batches[0][0])
    del dropped
    again = read_files(batches[0][0])
    assert [g.tobytes() for g in again] == [Path(p).read_bytes() for p in batches[0][0]]


@pytest.mark.parametrize("kind", ["missing", "empty", "folder"])
def test_read_files_names_the_file_it_cannot_read(tmp_path, kind):
    good = tmp_path / "good.bin"
    good.write_bytes(b"abc")
    bad = tmp_path / "bad.bin"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "folder":
        bad.mkdir()
    with pytest.raises(DatasetError, match=f"{bad}: (cannot read file|file is empty)"):
        read_files([str(good), str(bad), str(good)])


def test_plain_mask_from_bytes_is_read_mask_and_anything_else_goes_through_read_mask(tmp_path):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    noisy = np.random.default_rng(1).integers(0, 256, (37, 53), dtype=np.uint8)
    for k, m in enumerate((values, noisy)):
        path = tmp_path / f"m{k}.png"
        Image.fromarray(m, "L").save(path)
        got = plain_mask(np.fromfile(path, np.uint8), str(path))
        assert got.dtype == np.uint8 and np.array_equal(got, read_mask(path)) and np.array_equal(got, m)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([noisy, noisy // 2, noisy // 3], axis=2)).save(rgb)
    assert np.array_equal(plain_mask(np.fromfile(rgb, np.uint8), str(rgb)), read_mask(rgb))
    garbage = np.frombuffer(b"not a png at all", np.uint8)
    assert np.array_equal(plain_mask(garbage, str(tmp_path / "m1.png")), noisy)


def hard_pairs(root):
    """Pairs whose masks make the grid torn often (specks, strokes, edge blobs); every third mask RGB."""
    for folder in ("composite_images", "masks", "real_images"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    pairs = []
    for k, m in enumerate(hard_masks(np.random.default_rng(3))[3:27]):
        pair = Pair(root / "composite_images" / f"h{k}_1_1.jpg", root / "masks" / f"h{k}_1.png",
                    root / "real_images" / f"h{k}.jpg", "Hard", f"h{k}_1_1")  # fmt: skip
        photo = rng.integers(0, 256, (*m.shape, 3), dtype=np.uint8)
        Image.fromarray(photo).save(pair.composite, quality=90)
        Image.fromarray(photo).save(pair.real, quality=90)
        Image.fromarray(np.stack([m, m, m], axis=2) if k % 3 == 2 else m).save(pair.mask)
        pairs.append(pair)
    return pairs


def test_feed_crops_are_todays_on_torn_grids_and_re_encoded_masks(tmp_path, monkeypatch):
    pairs = hard_pairs(tmp_path / "Hard")
    idx = index_pairs(pairs)
    assert [m.plain for m in idx.masks].count(False) == 8
    calls = []
    real_read_mask = augment.read_mask
    monkeypatch.setattr("giftnet.pipeline.dali_feed.read_mask", lambda p: calls.append(p) or real_read_mask(p))
    decoded = 0
    for epoch in range(4):
        batches = [np.arange(s, min(s + 5, len(pairs))) for s in range(0, len(pairs), 5)]
        feed = TrainFeed(pairs, idx.masks, native=idx.native, crop_size=32, seed=9, epoch=epoch, batches=batches)
        for k, batch in enumerate(batches):
            comp, real, mask, anchor, shape, flip, index = feed(k)
            assert [r.tobytes() for r in real] == [pairs[i].real.read_bytes() for i in batch.tolist()]
            assert anchor.dtype == shape.dtype == flip.dtype == np.int32 and anchor.flags.c_contiguous
            for j, i in enumerate(batch.tolist()):
                want = reference_sample_crop(real_read_mask(pairs[i].mask), crop_size=32, seed=9, epoch=epoch, index=i)
                assert (*anchor[j].tolist(), *shape[j].tolist(), bool(flip[j])) == (
                    want.left, want.top, want.width, want.height, want.flip)  # fmt: skip
                assert int(index[j]) == i and comp[j].tobytes() == pairs[i].composite.read_bytes()
                if idx.masks[i].plain:
                    assert mask[j].tobytes() == pairs[i].mask.read_bytes()
                else:  # re-encoded as 8-bit grayscale: channel 0's values
                    assert np.array_equal(np.asarray(Image.open(pairs[i].mask))[:, :, 0],
                                          np.asarray(Image.open(io.BytesIO(mask[j].tobytes()))))  # fmt: skip
        decoded += feed.decoded
    assert decoded > 0  # the torn path (plain masks decoded from their bytes) was taken
    assert len(calls) == 4 * 8  # a non-plain mask is decoded once per epoch, torn or not
