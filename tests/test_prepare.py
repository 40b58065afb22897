"""giftnet.pipeline.builders.prepare on a tiny dataset: resized copy, lists, source untouched, resume, refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet.errors import UsageError
from giftnet.pipeline.builders.prepare import fit_long_side, main, prepare_dataset
from giftnet.pipeline.check import check_dataset
from giftnet.pipeline.ihd import read_pairs

MAX_SIDE = 64
# (subset, real id, height, width): one photo larger than MAX_SIDE, one that fits.
LAYOUT = [("HAdobe5k", "a1", 90, 150), ("HAdobe5k", "a2", 40, 60), ("HCOCO", "c1", 50, 64)]


def _make(root: Path) -> None:
    rng = np.random.default_rng(0)
    for subset, real_id, h, w in LAYOUT:
        for folder in ("composite_images", "masks", "real_images"):
            (root / subset / folder).mkdir(parents=True, exist_ok=True)
        real = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : h // 2, w // 4 : w // 2] = 255
        Image.fromarray(real).save(root / subset / "real_images" / f"{real_id}.jpg", quality=90)
        Image.fromarray(255 - real).save(root / subset / "composite_images" / f"{real_id}_1_1.jpg", quality=90)
        Image.fromarray(mask).save(root / subset / "masks" / f"{real_id}_1.png")
    (root / "HAdobe5k" / "HAdobe5k_train.txt").write_text("a1_1_1.jpg\n")
    (root / "HAdobe5k" / "HAdobe5k_test.txt").write_text("a2_1_1.jpg\n")
    (root / "HCOCO" / "HCOCO_train.txt").write_text("c1_1_1.jpg\n")


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "ihd"
    _make(root)
    return root


def test_fit_long_side():
    assert fit_long_side(6000, 4000, 1024) == (1024, 683)
    assert fit_long_side(3000, 5000, 1024) == (614, 1024)
    assert fit_long_side(1024, 800, 1024) == (1024, 800)


def test_writes_a_resized_copy_and_leaves_the_source_alone(data: Path, tmp_path: Path, capsys):
    before = _digest(data)
    out = tmp_path / "small"
    assert main(["--data", str(data), "--out", str(out), "--max-side", str(MAX_SIDE)]) == 0
    assert _digest(data) == before
    captured = capsys.readouterr()
    assert "9 files (3 resized, 6 copied, 0 already there)" in captured.out
    assert "prepare: 9/9 files (100%), 3 resized" in captured.err  # the progress line, plain text
    assert check_dataset(out) == []
    pairs = {p.name: p for p in read_pairs(out, None, "all")}
    assert sorted(pairs) == ["a1_1_1", "a2_1_1", "c1_1_1"]
    big = pairs["a1_1_1"]
    for path in (big.composite, big.real, big.mask):
        assert Image.open(path).size == (MAX_SIDE, 38)  # 150x90 -> 64x38
    mask = np.asarray(Image.open(big.mask))
    assert mask.ndim == 2 and 0.05 < (mask > 127).mean() < 0.2
    for name in ("a2_1_1", "c1_1_1"):  # already small: the very same bytes
        for kind in ("composite", "mask", "real"):
            copied = getattr(pairs[name], kind)
            assert copied.read_bytes() == (data / copied.relative_to(out)).read_bytes()
    assert (out / "HAdobe5k" / "HAdobe5k_test.txt").read_text() == "a2_1_1.jpg\n"


def test_resumes_and_refuses_other_arguments(data: Path, tmp_path: Path):
    out = tmp_path / "small"
    prepare_dataset(data, out, subsets=["HAdobe5k"], max_side=MAX_SIDE)
    victim = out / "HAdobe5k" / "real_images" / "a1.jpg"
    kept = victim.read_bytes()
    victim.unlink()
    counts = prepare_dataset(data, out, subsets=["HAdobe5k"], max_side=MAX_SIDE)
    assert counts == {"files": 6, "resized": 1, "copied": 0, "kept": 5}
    assert victim.read_bytes() == kept  # deterministic: the same bytes again
    assert not (out / "HCOCO").exists()
    with pytest.raises(UsageError, match="prepared with other arguments"):
        prepare_dataset(data, out, subsets=["HAdobe5k"], max_side=32)
    assert not list(out.rglob(".*.tmp"))


def test_refuses_to_write_inside_the_source(data: Path, capsys):
    assert main(["--data", str(data), "--out", str(data / "copy")]) == 2
    assert "never written to" in capsys.readouterr().err
    assert not (data / "copy").exists()
