"""giftnet.pipeline.loaders: both backends align the triplet, shard, resume bit-identically and agree."""

import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from giftnet.pipeline import dali_loader
from giftnet.pipeline.loaders import make_eval_loader, make_train_loader, resolve_backend
from giftnet.pipeline.pairs import IMAGENET_MEAN, IMAGENET_STD, DatasetError, Pair
from tests.data_helpers import SHIFT, write_triplets

HAVE_DALI = dali_loader.DALI_IMPORT_ERROR is None
needs_dali = pytest.mark.skipif(not HAVE_DALI, reason=f"DALI not importable: {dali_loader.DALI_IMPORT_ERROR}")
BACKENDS = ["torch", pytest.param("dali", marks=needs_dali)]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_triplets(tmp_path_factory.mktemp("ihd"))


def to_255(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean) * 255.0


def grow(region, margin):
    return F.max_pool2d(region.float(), 2 * margin + 1, stride=1, padding=margin) > 0


def loader(pairs, backend, **kw):
    args = {"batch_size": 4, "crop_size": 64, "num_workers": 0 if backend == "torch" else 1, "backend": backend}
    return make_train_loader(pairs, **(args | kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_triplet_stays_aligned_after_crop_and_flip(pairs, backend):
    with_fg = 0
    for epoch in range(2):
        for batch in loader(pairs, backend).epoch(epoch):
            assert batch["composite"].shape == batch["real"].shape == (4, 3, 64, 64)
            assert batch["mask"].shape == (4, 1, 64, 64) and batch["index"].dtype == torch.int64
            assert batch["composite"].dtype == batch["mask"].dtype == torch.float32
            mask = batch["mask"]
            assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
            diff = (to_255(batch["composite"]) - to_255(batch["real"])).abs().mean(1, keepdim=True)
            background = ~grow(mask > 0, 2)
            inside = ~grow(mask < 0.999, 2)
            assert float(diff[background].max()) < 2.0
            if inside.any():
                assert float(diff[inside].min()) > SHIFT - 8
            with_fg += int(inside.any())
    assert with_fg > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_reproduces_the_tail_bit_for_bit(pairs, backend):
    workers = {"num_workers": 2}  # worker processes (torch) or a feeder thread pool (DALI)
    full = list(loader(pairs, backend, batch_size=2, **workers).epoch(3))
    assert len(full) == 6
    tail = list(loader(pairs, backend, batch_size=2, **workers).epoch(3, start_batch=4))
    assert len(tail) == 2
    for a, b in zip(full[4:], tail, strict=True):
        for key in ("composite", "real", "mask", "index"):
            assert torch.equal(a[key], b[key]), key
    other = next(iter(loader(pairs, backend, batch_size=2).epoch(4)))
    assert not torch.equal(other["composite"], full[0]["composite"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world_size", [3, 5])
def test_shards_are_disjoint_and_equal(pairs, backend, world_size):
    shards = []
    for rank in range(world_size):
        ld = loader(pairs, backend, batch_size=2, rank=rank, world_size=world_size)
        shards.append([i for b in ld.epoch(1) for i in b["index"].tolist()])
        assert len(ld) == len(pairs) // world_size // 2
    flat = [i for s in shards for i in s]
    assert len({len(s) for s in shards}) == 1
    assert len(set(flat)) == len(flat) == world_size * len(shards[0])
    if len(pairs) % world_size == 0:
        assert sorted(flat) == list(range(len(pairs)))


@needs_dali
@pytest.mark.parametrize("workers", [1, 3])
def test_dali_cpu_only_matches_torch_crops(pairs, workers):
    """CPU-only DALI (device_id=None) and PIL + torch give the same batches, bit for bit: the same
    libjpeg-turbo pixels of the same windows, through the same resize and mirror tail (in DALI's
    case on `workers` threads at once, each sample written into its slot of the batch)."""
    assert dali_loader.device_id(torch.device("cpu")) is None
    dali = loader(pairs, "dali", num_workers=workers)
    batches = list(zip(dali.epoch(5), loader(pairs, "torch").epoch(5), strict=True))
    assert any(b["index"].numel() > 1 for b, _ in batches)
    for a, b in batches:
        assert a["composite"].device.type == "cpu"
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _truncate_after_scan_header(path):
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xff\xda") + 20])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fault", ["truncated", "garbage"])
def test_corrupt_jpeg_is_a_dataset_error_naming_the_file(pairs, tmp_path, backend, fault):
    src = pairs[3]
    bad = Pair(tmp_path / "c.jpg", tmp_path / "m.png", tmp_path / "r.jpg", "Synth", "bad")
    for a, b in ((src.composite, bad.composite), (src.mask, bad.mask), (src.real, bad.real)):
        shutil.copy(a, b)
    if fault == "truncated":
        _truncate_after_scan_header(bad.composite)
    else:
        bad.composite.write_bytes(b"this is not a jpeg")
    data = [*pairs[:5], bad, *pairs[5:]]
    with pytest.raises(DatasetError, match=re.escape(str(bad.composite))):
        for _ in loader(data, backend, batch_size=3, num_workers=2).epoch(0):
            pass
    with pytest.raises(DatasetError, match=re.escape(str(bad.composite))):
        for _ in make_eval_loader(data, batch_size=3, size=32, backend=backend, num_workers=1):
            pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_mismatch_and_missing_files_are_refused(pairs, tmp_path, backend):
    real = tmp_path / "small.jpg"
    Image.new("RGB", (40, 30)).save(real)
    bad = Pair(pairs[0].composite, pairs[0].mask, real, "Synth", "mismatch")
    with pytest.raises(DatasetError, match=r"small\.jpg"):
        for _ in loader([bad] * 4, backend).epoch(0):
            pass
    gone = Pair(pairs[0].composite, tmp_path / "missing_mask.png", pairs[0].real, "Synth", "gone")
    with pytest.raises(DatasetError, match=r"missing_mask\.png"):
        loader([*pairs, gone], backend)
    with pytest.raises(DatasetError, match=r"missing_mask\.png"):
        make_eval_loader([gone], batch_size=1, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_loader_in_order_with_soft_mask(pairs, backend):
    batches = list(make_eval_loader(pairs, batch_size=5, size=50, backend=backend, num_workers=1))
    assert [b["index"].tolist() for b in batches] == [list(range(5)), list(range(5, 10)), [10, 11]]
    for b in batches:
        n = len(b["index"])
        assert b["composite"].shape == b["composite_255"].shape == b["real_255"].shape == (n, 3, 50, 50)
        assert b["mask"].shape == (n, 1, 50, 50)
        assert torch.equal(b["composite_255"], b["composite_255"].round())
        assert float(b["real_255"].min()) >= 0.0 and float(b["real_255"].max()) <= 255.0
        torch.testing.assert_close(to_255(b["composite"]), b["composite_255"], atol=1e-3, rtol=0)
        mask = b["mask"]
        soft = (mask > 0.02) & (mask < 0.98)
        assert soft.any()
        # Soft values only at the edges: each soft pixel touches both the foreground and the background.
        assert not (soft & ~(grow(mask >= 0.98, 1) & grow(mask <= 0.02, 1))).any()
        diff = (b["composite_255"] - b["real_255"]).abs().mean(1, keepdim=True)
        assert float(diff[~grow(mask > 0, 1)].max()) < 2.0
        assert float(diff[~grow(mask < 0.999, 1)].min()) > SHIFT - 8


@needs_dali
def test_eval_backends_agree(pairs):
    """On the CPU both backends resize as OpenCV does: the same batches, bit for bit (so the same metrics)."""
    dali = make_eval_loader(pairs, batch_size=4, size=64, backend="dali", num_workers=1)
    pil = make_eval_loader(pairs, batch_size=4, size=64, backend="torch", num_workers=0)
    batches = list(zip(dali, pil, strict=True))
    assert len(batches) == len(pil) >= 2
    for a, b in batches:
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_backend_choice(monkeypatch, pairs):
    assert resolve_backend("torch") == "torch"
    assert resolve_backend("auto") == ("dali" if HAVE_DALI else "torch")
    monkeypatch.setattr(dali_loader, "DALI_IMPORT_ERROR", "No module named 'nvidia.dali'")
    assert resolve_backend("auto") == "torch"
    with pytest.raises(RuntimeError, match="needs NVIDIA DALI"):
        make_train_loader(pairs, batch_size=2, backend="dali")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("opencv")
    with pytest.raises(ValueError, match="batch_size"):
        make_train_loader(pairs, batch_size=13, backend="torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_batches_match_cpu_and_resume(pairs, backend):
    """On the GPU (DALI decodes with nvJPEG there): batches on the device, close to the CPU crops."""
    cuda = loader(pairs, backend, batch_size=2, device=torch.device("cuda"))
    full = list(cuda.epoch(2))
    for a, b in zip(full[3:], cuda.epoch(2, start_batch=3), strict=True):
        for key in ("composite", "real", "mask", "index"):
            assert torch.equal(a[key], b[key]), key
    for a, b in zip(full, loader(pairs, "torch", batch_size=2).epoch(2), strict=True):
        assert a["composite"].device.type == "cuda"
        assert torch.equal(a["index"].cpu(), b["index"])
        for key in ("composite", "real"):
            diff = (to_255(a[key].cpu()) - to_255(b[key])).abs()
            assert float(diff.mean()) < 1.0, key  # nvJPEG vs libjpeg-turbo: a level or two here and there
        torch.testing.assert_close(a["mask"].cpu(), b["mask"], atol=1e-3, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_dali
def test_cuda_dali_feeder_process_gives_the_inline_batches(pairs):
    """The GPU graph's feeder in a spawned worker process (the default with CUDA) and in this process:
    the same batches, bit for bit, and a resumed tail equal to the full epoch's."""
    cuda = torch.device("cuda")
    inline = list(loader(pairs, "dali", batch_size=2, device=cuda, feed_processes=0, num_workers=2).epoch(1))
    spawned = loader(pairs, "dali", batch_size=2, device=cuda, feed_processes=1, num_workers=2)
    assert len(inline) == len(spawned) > 2
    for a, b in zip(inline, [*spawned.epoch(1)], strict=True):
        for key in ("composite", "real", "mask", "index"):
            assert torch.equal(a[key], b[key]), key
    for a, b in zip(inline[2:], spawned.epoch(1, start_batch=2), strict=True):
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["index"], b["index"])
