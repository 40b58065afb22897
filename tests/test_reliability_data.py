"""Bad data (issue 8, item 1): one mask reader everywhere, odd files through the loaders, and a trainer
that refuses a broken dataset with a message naming every file, or skips and logs them when told to."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from giftnet.pipeline import augment, dali_eval, dali_loader, images
from giftnet.pipeline.augment import epoch_order
from giftnet.pipeline.check import check_dataset
from giftnet.pipeline.ihd import read_pairs
from giftnet.pipeline.loaders import make_eval_loader, make_train_loader
from giftnet.pipeline.pairs import Pair
from giftnet.training.cli import main

H, W = 40, 48
BACKENDS = ["torch", pytest.param("dali", marks=pytest.mark.skipif(dali_loader.DALI_IMPORT_ERROR is not None,
                                                                     reason="DALI not importable"))]  # fmt: skip


def _box() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[8:32, 16:40] = 255
    return mask


def _photo(seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((W, H), Image.BILINEAR))


MASK_FORMATS = {
    "L": lambda m: Image.fromarray(m, "L"),
    "alpha_only": lambda m: Image.fromarray(np.dstack([np.zeros((H, W, 3), np.uint8), m]), "RGBA"),
    "sixteen_bit": lambda m: Image.fromarray(m.astype(np.uint16) * 257),
    "LA": lambda m: Image.fromarray(np.dstack([m, np.full((H, W), 255, np.uint8)]), "LA"),
    "palette": lambda m: Image.fromarray(m, "L").convert("P"),
    "one_bit": lambda m: Image.fromarray(m > 0),
    "RGB": lambda m: Image.fromarray(np.dstack([m, m, m]), "RGB"),
}


@pytest.mark.parametrize("fmt", MASK_FORMATS)
def test_loaders_and_checker_read_every_mask_format_alike(tmp_path, fmt):
    path = tmp_path / "m.png"
    MASK_FORMATS[fmt](_box()).save(path)
    assert augment.read_mask(path).dtype == np.uint8
    np.testing.assert_array_equal(augment.read_mask(path), _box())  # 0/255 whatever the storage
    np.testing.assert_array_equal(augment.read_mask(path), np.rint(images.read_mask(path) * 255))
    assert dali_eval.read_mask is augment.read_mask  # the DALI feeder decodes masks with it too


@pytest.mark.parametrize("backend", BACKENDS)
def test_loader_batches_do_not_depend_on_how_the_mask_is_stored(tmp_path, backend):
    """A pair whose mask is alpha-only or 16-bit gives the same crops and masks as one with an L mask."""
    pairs = {}
    for fmt in ("L", "alpha_only", "sixteen_bit"):
        folder = tmp_path / fmt
        folder.mkdir()
        pair = Pair(folder / "c.jpg", folder / "m.png", folder / "r.jpg", "S", "c_1_1")
        Image.fromarray(_photo(1)).save(pair.composite, quality=95)
        Image.fromarray(_photo(2)).save(pair.real, quality=95)
        MASK_FORMATS[fmt](_box()).save(pair.mask)
        pairs[fmt] = [pair] * 2
    batches = {
        fmt: next(iter(make_train_loader(p, batch_size=2, crop_size=32, backend=backend, num_workers=1).epoch(0)))
        for fmt, p in pairs.items()
    }
    for fmt in ("alpha_only", "sixteen_bit"):
        assert float(batches[fmt]["mask"].max()) == 1.0, fmt  # the old channel-0 reader saw an empty mask
        for key in ("composite", "real", "mask"):
            assert torch.equal(batches[fmt][key], batches["L"][key]), (fmt, key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_photos_and_empty_or_full_masks_load(tmp_path, backend):
    """Grayscale and CMYK photos become RGB; an empty or a full mask still gives a batch (not a stall)."""
    cases = {"gray": ("L", _box()), "cmyk": ("CMYK", _box()), "empty": ("RGB", _box() * 0), "full": ("RGB", _box() * 0 + 255)}  # fmt: skip
    pairs = []
    for name, (mode, mask) in cases.items():
        pair = Pair(tmp_path / f"{name}_c.jpg", tmp_path / f"{name}_m.png", tmp_path / f"{name}_r.jpg", "S", name)
        Image.fromarray(_photo(3)).convert(mode).save(pair.composite, quality=95)
        Image.fromarray(_photo(4)).save(pair.real, quality=95)
        Image.fromarray(mask).save(pair.mask)
        pairs.append(pair)
    batch = next(iter(make_train_loader(pairs, batch_size=4, crop_size=32, backend=backend, num_workers=1).epoch(0)))
    assert batch["composite"].shape == (4, 3, 32, 32) and torch.isfinite(batch["composite"]).all()
    by_index = {i: m for i, m in zip(batch["index"].tolist(), batch["mask"], strict=True)}
    assert float(by_index[2].max()) == 0.0 and float(by_index[3].min()) == 1.0
    ev = next(iter(make_eval_loader(pairs, batch_size=4, size=32, backend=backend, num_workers=1)))
    gray = ev["composite_255"][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_checker_reports_full_masks_and_blank_lines_with_the_rest(tmp_path):
    folder = tmp_path / "HT"
    for sub in ("composite_images", "masks", "real_images"):
        (folder / sub).mkdir(parents=True)
    for name, mask in (("a_1_1", _box()), ("b_1_1", _box() * 0 + 255), ("c_1_1", _box() * 0)):
        Image.fromarray(_photo(5)).save(folder / "composite_images" / f"{name}.jpg")
        Image.fromarray(_photo(6)).save(folder / "real_images" / f"{name[0]}.jpg")
        Image.fromarray(mask).save(folder / "masks" / f"{name[:3]}.png")
    (folder / "HT_train.txt").write_bytes(b"a_1_1.jpg\r\n\r\nb_1_1.jpg\r\n  \r\nc_1_1.jpg\r\n")
    found = {(p.severity, p.path.name, p.message) for p in check_dataset(tmp_path)}
    assert ("warning", "b_1.png", "mask covers the whole image") in found
    assert ("error", "c_1.png", "mask is empty (no pixel above 127)") in found
    assert ("warning", "HT_train.txt", "2 blank line(s), skipped by readers") in found
    assert any(s == "warning" and n == "HT_train.txt" and "CRLF" in m for s, n, m in found)
    assert [p.name for p in read_pairs(tmp_path)] == ["a_1_1", "b_1_1", "c_1_1"]


# ---- the trainer on a broken dataset ---------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Path:
    from giftnet.pipeline.builders.synth import build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("data"), n_train=16, n_test=4, size=40, seed=0)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--stage", "reconstruction", "--teacher-epochs", "1",
        "--batch-size", "4", "--crop-size", "32", "--base-channels", "8", "--ckpt-every", "2", "--log-every", "2",
        "--backend", "torch", "--workers", "0", "--eval-every", "0", *extra,
    ]  # fmt: skip


def _train_pairs(root: Path) -> list[Pair]:
    return read_pairs(root, split="train")


def _truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xff\xda") + 40])  # the header parses, the scan is cut
    return data


@pytest.fixture
def broken(clean_data, tmp_path, bomb_png) -> tuple[Path, dict[str, Path]]:
    """The clean dataset with one of each fault planted (a copy)."""
    root = tmp_path / "broken"
    shutil.copytree(clean_data, root)
    pairs = _train_pairs(root)
    subset = pairs[0].composite.parents[1]
    faults = {
        "truncated": pairs[1].composite,
        "zero_bytes": pairs[3].composite,
        "missing": pairs[5].mask,
        "size": pairs[7].composite,
        "bomb": pairs[9].composite,  # a PNG declaring 100000x100000 pixels (issue 11)
    }
    _truncate(faults["truncated"])
    faults["zero_bytes"].write_bytes(b"")
    faults["missing"].unlink()  # masks are shared by the pairs of one object: those lines all name it
    Image.fromarray(np.zeros((44, 40, 3), np.uint8)).save(faults["size"], quality=90)
    faults["bomb"].write_bytes(bomb_png)
    list_file = subset / f"{subset.name}_train.txt"
    escape = f"../../{subset.name}/composite_images/{pairs[0].composite.name}\n".encode()  # leaves the root
    list_file.write_bytes((list_file.read_bytes() + escape).replace(b"\n", b"\r\n\r\n"))  # CRLF, blank lines: tolerated
    faults["escape"] = list_file
    return root, faults


def test_trainer_refuses_a_broken_dataset_naming_each_file(broken, tmp_path, capsys):
    root, faults = broken
    assert main(train_args(root, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--skip-bad-data" in err
    for kind in ("zero_bytes", "missing", "size", "bomb"):
        assert str(faults[kind]) in err, (kind, err)
    assert "file is empty (0 bytes)" in err and "file does not exist" in err and "but real image" in err
    assert "budget" in err and "leaves the dataset root" in err
    assert "CRLF" not in err and "blank line" not in err  # tolerated, not errors
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("ckpt-*"))


def test_skip_bad_data_trains_on_the_rest_and_logs_every_skipped_item(broken, tmp_path, capsys):
    root, faults = broken
    assert main(train_args(root, tmp_path / "run", "--skip-bad-data")) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith("skipped")]
    for kind, path in faults.items():
        assert any(str(path) in line for line in skipped), (kind, skipped)
    assert any("unreadable or truncated" in line for line in skipped)  # found only by decoding
    assert any(str(faults["bomb"]) in line and "budget" in line for line in skipped)
    assert any(str(faults["escape"]) in line and "leaves the dataset root" in line for line in skipped)
    n_bad, kept = (int(v) for v in re.search(r"skipped (\d+) bad train item\(s\); kept (\d+) pairs", out).groups())
    n_lines = len([ln for ln in (root / "HSynth" / "HSynth_train.txt").read_text().splitlines() if ln.strip()])
    assert n_bad + kept == n_lines and n_bad >= len(faults)
    assert f"{kept} train /" in out
    assert (tmp_path / "run" / "teacher.safetensors").is_file()


def test_a_file_that_fails_to_decode_mid_run_stops_with_a_checkpoint_and_resumes_exactly(clean_data, tmp_path, capsys):
    """The quick start-up check reads headers only: a truncated JPEG is met by the loader mid-run."""
    reference = tmp_path / "ref"
    assert main(train_args(clean_data, reference)) == 0
    root = tmp_path / "data"
    shutil.copytree(clean_data, root)
    pairs = _train_pairs(root)
    victim = pairs[int(epoch_order(len(pairs), seed=0, epoch=0)[9])].composite  # third batch of epoch 0
    original = _truncate(victim)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(train_args(root, out)) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "checkpoint saved at step 2" in err and "--resume" in err
    assert "Traceback" not in err
    victim.write_bytes(original)  # the user repairs the file
    assert main(["--resume", str(out)]) == 0
    ref, got = load_file(reference / "teacher.safetensors"), load_file(out / "teacher.safetensors")
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
