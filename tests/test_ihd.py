"""iHarmony4 readers: naming rules, list forms (per subset, global IHD), line endings, missing files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline.ihd import BadLine, list_subsets, read_list_lines, read_pairs, split_name
from giftnet.pipeline.pairs import DatasetError, Pair


def _image(path: Path, value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8, 3) if mode == "RGB" else (8, 8)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path)


def make_subset(root: Path, subset: str, split_names: dict[str, list[str]], newline: str = "\n") -> Path:
    """A subset folder with tiny files for every composite named in the lists (and its real and mask)."""
    folder = root / subset
    for split, names in split_names.items():
        for name in names:
            real, mask = split_name(name.removesuffix(".jpg"))
            _image(folder / "composite_images" / name, 100)
            _image(folder / "real_images" / f"{real}.jpg", 120)
            _image(folder / "masks" / f"{mask}.png", 255, "L")
        (folder / f"{subset}_{split}.txt").write_bytes(newline.join(names).encode() + newline.encode())
    return folder


@pytest.mark.parametrize(
    ("stem", "real", "mask"),
    [
        ("c1_1_1", "c1", "c1_1"),
        ("c100013_12_3", "c100013", "c100013_12"),
        ("d90000012-181_1_7", "d90000012-181", "d90000012-181_1"),
        ("a0001_2_1_5", "a0001", "a0001_2_1"),  # mask drops only the last '_Z'
    ],
)
def test_split_name_rules(stem, real, mask):
    assert split_name(stem) == (real, mask)


@pytest.mark.parametrize("stem", ["c1", "c1_1", "c1__1", "_1_1"])
def test_split_name_rejects_names_without_x_y_z(stem):
    with pytest.raises(ValueError, match="X_Y_Z"):
        split_name(stem)


def test_per_subset_lists_several_subsets(tmp_path):
    make_subset(tmp_path, "HCOCO", {"train": ["c1_1_1.jpg", "c1_1_2.jpg", "c2_1_1.jpg"], "test": ["c9_1_1.jpg"]})
    make_subset(tmp_path, "Hday2night", {"train": ["d90000012-181_1_7.jpg"], "test": ["d1-2_1_1.jpg"]})
    (tmp_path / "notes").mkdir()  # a folder without lists is not a subset
    pairs = read_pairs(tmp_path)
    assert [(p.subset, p.name) for p in pairs] == [
        ("HCOCO", "c1_1_1"),
        ("HCOCO", "c1_1_2"),
        ("HCOCO", "c2_1_1"),
        ("Hday2night", "d90000012-181_1_7"),
    ]
    night = pairs[-1]
    assert night == Pair(
        composite=tmp_path / "Hday2night/composite_images/d90000012-181_1_7.jpg",
        mask=tmp_path / "Hday2night/masks/d90000012-181_1.png",
        real=tmp_path / "Hday2night/real_images/d90000012-181.jpg",
        subset="Hday2night",
        name="d90000012-181_1_7",
    )
    assert [p.name for p in read_pairs(tmp_path, ["Hday2night"], "test")] == ["d1-2_1_1"]
    assert len(read_pairs(tmp_path, split="all")) == 6
    assert list_subsets(tmp_path, "train") == ["HCOCO", "Hday2night"]
    assert [p.subset for p in read_pairs(tmp_path / "HCOCO", split="test")] == ["HCOCO"]  # root = one subset


def test_global_ihd_list_form(tmp_path):
    make_subset(tmp_path, "HCOCO", {"x": ["c1_1_1.jpg", "c2_1_1.jpg"]})
    make_subset(tmp_path, "HFlickr", {"x": ["f7_1_1.jpg"]})
    lines = [
        "HCOCO/composite_images/c1_1_1.jpg",
        "HFlickr\\composite_images\\f7_1_1.jpg",
        "",
        "HCOCO/composite_images/c2_1_1.jpg",
    ]
    (tmp_path / "IHD_train.txt").write_text("\r\n".join(lines) + "\r\n")
    pairs = read_pairs(tmp_path, split="train")
    assert [(p.subset, p.name) for p in pairs] == [("HCOCO", "c1_1_1"), ("HFlickr", "f7_1_1"), ("HCOCO", "c2_1_1")]
    assert all(p.composite.is_file() and p.mask.is_file() and p.real.is_file() for p in pairs)
    assert [p.name for p in read_pairs(tmp_path, ["HFlickr"], "train")] == ["f7_1_1"]
    assert list_subsets(tmp_path, "train") == ["HCOCO", "HFlickr"]
    with pytest.raises(DatasetError, match=r"IHD_test\.txt"):
        read_pairs(tmp_path, split="test")


def test_crlf_blank_lines_and_bom_are_tolerated(tmp_path):
    folder = make_subset(tmp_path, "HAdobe5k", {"train": ["a1_1_1.jpg", "a2_1_1.jpg"]})
    (folder / "HAdobe5k_train.txt").write_bytes(b"\xef\xbb\xbfa1_1_1.jpg\r\n\r\n  \r\na2_1_1.jpg  \r\n\r\n")
    assert [p.name for p in read_pairs(tmp_path)] == ["a1_1_1", "a2_1_1"]
    assert read_list_lines(folder / "HAdobe5k_train.txt") == [(1, "a1_1_1.jpg"), (4, "a2_1_1.jpg")]


def test_missing_file_names_list_line_and_path(tmp_path):
    folder = make_subset(tmp_path, "HCOCO", {"train": ["c1_1_1.jpg", "c2_1_1.jpg", "c3_1_1.jpg"]})
    (folder / "masks" / "c2_1.png").unlink()
    (folder / "real_images" / "c3.jpg").unlink()
    with pytest.raises(DatasetError) as info:
        read_pairs(tmp_path)
    message = str(info.value)
    assert f"{folder / 'HCOCO_train.txt'}:2: missing {folder / 'masks' / 'c2_1.png'}" in message
    assert f"{folder / 'HCOCO_train.txt'}:3: missing {folder / 'real_images' / 'c3.jpg'}" in message

    pairs, bad = read_pairs(tmp_path, strict=False)
    assert [p.name for p in pairs] == ["c1_1_1"]
    assert [(b.line_no, b.line, b.missing) for b in bad] == [
        (2, "c2_1_1.jpg", (folder / "masks" / "c2_1.png",)),
        (3, "c3_1_1.jpg", (folder / "real_images" / "c3.jpg",)),
    ]
    assert all(isinstance(b, BadLine) and b.subset == "HCOCO" for b in bad)


def test_bad_names_and_missing_lists_are_clear_errors(tmp_path):
    folder = make_subset(tmp_path, "HCOCO", {"train": ["c1_1_1.jpg"]})
    (folder / "HCOCO_train.txt").write_text("c1_1_1.jpg\nnounderscore.jpg\n")
    with pytest.raises(DatasetError, match=r"HCOCO_train\.txt:2: composite name 'nounderscore'"):
        read_pairs(tmp_path)
    with pytest.raises(DatasetError, match=r"HFlickr_train\.txt"):
        read_pairs(tmp_path, ["HFlickr"])
    with pytest.raises(DatasetError, match="not a directory"):
        read_pairs(tmp_path / "absent")
    with pytest.raises(ValueError, match="split"):
        read_pairs(tmp_path, split="val")
