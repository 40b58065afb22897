"""giftnet.pipeline.feed_files and the TrainFeed built on it: batch reads into reused buffers, and crops
and mask windows still exactly today's (torn grids and RGB masks included) with no mask file read."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline import feed_files
from giftnet.pipeline.augment import read_mask
from giftnet.pipeline.dali_feed import TrainFeed
from giftnet.pipeline.feed_files import Arenas, read_files
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


def test_feed_crops_and_mask_windows_are_todays_on_torn_grids_without_the_mask_files(tmp_path):
    pairs = hard_pairs(tmp_path / "Hard")
    idx = index_pairs(pairs)
    masks = {i: read_mask(p.mask) for i, p in enumerate(pairs)}  # every third one an RGB file
    for pair in pairs:
        pair.mask.unlink()  # the feeder reads no mask file: the index's runs hold their pixels
    decoded = 0
    for epoch in range(4):
        batches = [np.arange(s, min(s + 5, len(pairs))) for s in range(0, len(pairs), 5)]
        feed = TrainFeed(pairs, idx.masks, runs=idx.runs, native=idx.native, crop_size=32, seed=9, epoch=epoch,
                         batches=batches)  # fmt: skip
        for k, batch in enumerate(batches):
            comp, real, mask, anchor, shape, flip, index = feed(k)
            assert [r.tobytes() for r in real] == [pairs[i].real.read_bytes() for i in batch.tolist()]
            assert anchor.dtype == shape.dtype == flip.dtype == np.int32 and anchor.flags.c_contiguous
            for j, i in enumerate(batch.tolist()):
                want = reference_sample_crop(masks[i], crop_size=32, seed=9, epoch=epoch, index=i)
                assert (*anchor[j].tolist(), *shape[j].tolist(), bool(flip[j])) == (
                    want.left, want.top, want.width, want.height, want.flip)  # fmt: skip
                assert int(index[j]) == i and comp[j].tobytes() == pairs[i].composite.read_bytes()
                cut = masks[i][want.top : want.top + want.height, want.left : want.left + want.width]
                assert mask[j].dtype == np.uint8 and mask[j].flags.c_contiguous
                assert np.array_equal(mask[j], cut[:, :, None])
        decoded += feed.decoded
    assert decoded > 0  # the torn path (the whole mask expanded from its runs) was taken


def test_a_runs_file_removed_under_a_feed_falls_back_to_the_mask_files(tmp_path):
    from giftnet.pipeline import dali_feed

    pairs = hard_pairs(tmp_path / "Hard")[:6]
    idx = index_pairs(pairs)
    batches = [np.arange(6)]
    kw = {"runs": idx.runs, "native": idx.native, "crop_size": 32, "seed": 9, "epoch": 1, "batches": batches}
    want = TrainFeed(pairs, idx.masks, **kw)(0)[2]
    for runs in (tmp_path / "Hard").glob("giftnet-mask-runs-*.bin"):
        runs.unlink()  # as when another process refreshes the index while this one trains
    dali_feed._WARNED.clear()
    with pytest.warns(UserWarning, match="giftnet-mask-runs-.*decoding the masks from their files"):
        got = TrainFeed(pairs, idx.masks, **kw)(0)[2]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
