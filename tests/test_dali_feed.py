"""giftnet.pipeline.dali_feed: the index-fed DALI graph gives today's crops, in or out of worker processes."""

import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from giftnet.pipeline import dali_loader, images
from giftnet.pipeline.augment import read_mask
from giftnet.pipeline.dali_feed import TrainFeed
from giftnet.pipeline.loaders import make_train_loader
from giftnet.pipeline.pairs import DatasetError, Pair
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
                cut = read_mask(pairs[i].mask)[want.top : want.top + want.height, want.left : want.left + want.width]
                assert np.array_equal(cols[2][j], cut[:, :, None])  # the window's pixels, from the runs
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


def test_rgb_mask_gives_the_torch_paths_batch(pairs, tmp_path):
    src = pairs[4]
    odd = Pair(tmp_path / "c.jpg", tmp_path / "m.png", tmp_path / "r.jpg", "Synth", "odd")
    shutil.copy(src.composite, odd.composite)
    shutil.copy(src.real, odd.real)
    m = read_mask(src.mask)
    Image.fromarray(np.stack([m, m // 2, m // 3], axis=2)).save(odd.mask)  # RGB: channel 0 is the mask
    ld = dali([odd] * 3, batch_size=3)
    batch = next(iter(ld.epoch(1)))
    ref = next(iter(make_train_loader([odd] * 3, batch_size=3, crop_size=48, seed=5, backend="torch", num_workers=0)
                    .epoch(1)))  # fmt: skip
    torch.testing.assert_close(batch["mask"], ref["mask"], atol=1e-4, rtol=0)


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
    kw = {"runs": ld.index.runs, "native": ld.index.native, "crop_size": 48, "seed": 5, "epoch": 3, "batches": batches}
    a, b = TrainFeed(pairs, ld.index.masks, **kw), TrainFeed(pairs, ld.index.masks, **kw)
    forward = [a(k)[3:] for k in range(len(batches))]
    backward = [b(k)[3:] for k in reversed(range(len(batches)))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert all(
            np.array_equal(u, v) for col_x, col_y in zip(x, y, strict=True) for u, v in zip(col_x, col_y, strict=True)
        )


def odd_photos(root):
    """Three pairs: an EXIF-rotated JPEG composite, a 16-bit PNG real image, then plain files."""
    for folder in ("composite_images", "masks", "real_images"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    pairs = []
    for k in range(3):
        photo = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
        mask = np.zeros((72, 96), np.uint8)
        mask[20:50, 30:70] = 255
        pair = Pair(root / "composite_images" / f"o{k}_1_1.jpg", root / "masks" / f"o{k}_1.png",
                    root / "real_images" / f"o{k}.{'png' if k == 1 else 'jpg'}", "Odd", f"o{k}_1_1")  # fmt: skip
        if k == 0:  # stored 96 wide x 72 high turned a quarter; orientation 6 turns it back
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1))).save(pair.composite, quality=95, exif=exif)
        else:
            Image.fromarray(photo).save(pair.composite, quality=95)
        if k == 1:
            Image.fromarray(photo[:, :, 0].astype(np.uint16) * 257).save(pair.real)  # 16-bit grayscale
        else:
            Image.fromarray(photo).save(pair.real, quality=95)
        Image.fromarray(mask).save(pair.mask)
        pairs.append(pair)
    return pairs


def test_the_index_says_which_photos_dali_decodes_as_stored_and_the_feed_reads_no_header(tmp_path, monkeypatch):
    pairs = odd_photos(tmp_path / "Odd")
    ld = dali(pairs, batch_size=3)
    assert ld.index.native == [(False, True), (True, False), (True, True)]
    with np.load(tmp_path / "Odd" / "giftnet-index.npz", allow_pickle=False) as z:
        stored = dict(zip(z["paths"].tolist(), z["native"].tolist(), strict=True))
    assert stored["composite_images/o0_1_1.jpg"] is False and stored["real_images/o1.png"] is False
    assert stored["real_images/o0.jpg"] is True and stored["masks/o0_1.png"] is False  # masks: runs
    want = {i: (images.dali_bytes(p.composite).tobytes(), images.dali_bytes(p.real).tobytes()) for i, p in
            enumerate(pairs)}  # the bytes DALI got before the index held the flag  # fmt: skip

    def no_header(path):
        raise AssertionError(f"a header was read at run time: {path}")

    monkeypatch.setattr(images, "read_header", no_header)
    feed = ld.feed(2, ld.plan.batches(2))
    cols = feed(0)
    for j, i in enumerate(cols[6]):
        assert (cols[0][j].tobytes(), cols[1][j].tobytes()) == want[int(i)]
        want_crop = reference_sample_crop(read_mask(pairs[int(i)].mask), crop_size=48, seed=5, epoch=2, index=int(i))
        assert (cols[3][j].tolist(), bool(cols[5][j])) == ([want_crop.left, want_crop.top], want_crop.flip)
    monkeypatch.undo()
    batch = next(iter(ld.epoch(2)))  # and DALI decodes them to the torch path's pixels
    ref = next(iter(make_train_loader(pairs, batch_size=3, crop_size=48, seed=5, backend="torch", num_workers=0,
                                      drop_last=False).epoch(2)))  # fmt: skip
    for key in ("composite", "real"):
        torch.testing.assert_close(batch[key], ref[key], atol=0.05, rtol=0)
