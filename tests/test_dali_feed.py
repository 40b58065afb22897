"""pipeline.dali_feed: the index-fed DALI graph gives today's crops, in or out of worker processes."""

import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import dali_loader
from pipeline.augment import read_mask
from pipeline.dali_feed import TrainFeed, encode_mask
from pipeline.loaders import make_train_loader
from pipeline.pairs import DatasetError, Pair
from tests.data_helpers import reference_sample_crop, write_triplets

pytestmark = pytest.mark.skipif(
    dali_loader.DALI_IMPORT_ERROR is not None, reason=f"DALI not importable: {dali_loader.DALI_IMPORT_ERROR}"
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_triplets(tmp_path_factory.mktemp("ihd") / "Synth", n=10, seed=3)


def dali(pairs, **kw):
    args = {"batch_size": 3, "crop_size": 48, "num_workers": 1, "backend": "dali", "drop_last": False, "seed": 5}
    return make_train_loader(pairs, **(args | kw))


def test_feed_draws_todays_crops(pairs):
    ld = dali(pairs)
    for epoch in (0, 7):
        batches = ld.plan.batches(epoch)
        feed = ld.feed(epoch, batches)
        for k, batch in enumerate(batches):
            cols = feed(k)
            for j, i in enumerate(batch.tolist()):
                want = reference_sample_crop(read_mask(pairs[i].mask), crop_size=48, seed=5, epoch=epoch, index=i)
                left, top = cols[3][j].tolist()
                width, height = cols[4][j].tolist()
                assert (top, left, height, width, bool(cols[5][j])) == (
                    want.top, want.left, want.height, want.width, want.flip)  # fmt: skip
                assert int(cols[6][j]) == i
                assert cols[2][j].tobytes() == pairs[i].mask.read_bytes()  # plain PNG: bytes passed as they are
    with pytest.raises(StopIteration):
        feed(len(batches))


@pytest.mark.parametrize("processes", [1, 2])
def test_worker_processes_give_the_same_batches_and_resume(pairs, processes):
    inline = list(dali(pairs, feed_processes=0).epoch(2))
    parallel = list(dali(pairs, feed_processes=processes, num_workers=2).epoch(2))
    tail = list(dali(pairs, feed_processes=processes, num_workers=2).epoch(2, start_batch=2))
    assert len(inline) == len(parallel) == 4 and inline[-1]["index"].numel() == 1  # partial last batch kept
    for a, b in zip(inline, parallel, strict=True):
        for key in ("composite", "real", "mask", "index"):
            assert torch.equal(a[key], b[key]), key
    for a, b in zip(inline[2:], tail, strict=True):
        for key in ("composite", "real", "mask", "index"):
            assert torch.equal(a[key], b[key]), key


def test_non_plain_mask_is_reencoded_and_matches_torch(pairs, tmp_path):
    src = pairs[4]
    odd = Pair(tmp_path / "c.jpg", tmp_path / "m.png", tmp_path / "r.jpg", "Synth", "odd")
    shutil.copy(src.composite, odd.composite)
    shutil.copy(src.real, odd.real)
    m = read_mask(src.mask)
    Image.fromarray(np.stack([m, m // 2, m // 3], axis=2)).save(odd.mask)  # RGB: channel 0 is the mask
    ld = dali([odd] * 3, batch_size=3)
    assert not ld.index.masks[0].plain
    batch = next(iter(ld.epoch(1)))
    ref = next(iter(make_train_loader([odd] * 3, batch_size=3, crop_size=48, seed=5, backend="torch", num_workers=0)
                    .epoch(1)))  # fmt: skip
    torch.testing.assert_close(batch["mask"], ref["mask"], atol=1e-4, rtol=0)
    assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(encode_mask(m).tobytes()))), m)


def test_mixed_path_passes_definition_checks(pairs):
    """Without a GPU the mixed graph (GPU decoding of images and mask) can still be defined."""
    ld = dali(pairs)
    ld.device = torch.device("cuda", 0)
    for processes in (0, 1):
        ld.feed_processes = processes
        pipe = ld._define(ld.feed(0, ld.plan.batches(0)))
        assert pipe.device_id == 0


def test_file_lost_after_indexing_names_the_file_from_a_worker(pairs, tmp_path):
    copies = []
    for k, p in enumerate(pairs[:6]):
        sub = tmp_path / "Synth"
        for folder in ("composite_images", "masks", "real_images"):
            (sub / folder).mkdir(parents=True, exist_ok=True)
        c = Pair(*(sub / f.parent.name / f.name for f in (p.composite, p.mask, p.real)), "Synth", f"c{k}")
        for a, b in zip((p.composite, p.mask, p.real), (c.composite, c.mask, c.real), strict=True):
            shutil.copy(a, b)
        copies.append(c)
    ld = dali(copies, feed_processes=1, num_workers=2, batch_size=2)
    assert (tmp_path / "Synth" / "giftnet-index.npz").is_file()
    copies[3].real.unlink()
    with pytest.raises(
        DatasetError, match=re.escape(f"{copies[3].real}: ") + "(cannot read file|image does not exist)"
    ):
        for _ in ld.epoch(0):
            pass


def test_feed_is_a_pure_function_of_seed_epoch_index(pairs):
    ld = dali(pairs)
    batches = ld.plan.batches(3)
    a = TrainFeed(pairs, ld.index.masks, crop_size=48, seed=5, epoch=3, batches=batches)
    b = TrainFeed(pairs, ld.index.masks, crop_size=48, seed=5, epoch=3, batches=batches)
    forward = [a(k)[3:] for k in range(len(batches))]
    backward = [b(k)[3:] for k in reversed(range(len(batches)))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert all(
            np.array_equal(u, v) for col_x, col_y in zip(x, y, strict=True) for u, v in zip(col_x, col_y, strict=True)
        )
