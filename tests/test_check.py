"""The dataset checker finds every planted fault in one run; image helpers read odd formats or name the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline.check import check_dataset, main, require_valid
from giftnet.pipeline.images import read_mask, read_rgb
from giftnet.pipeline.pairs import DatasetError

H, W = 24, 32
NAMES = [
    "ok_1_1",
    "trunc_1_1",
    "zero_1_1",
    "alpha_1_1",
    "deep_1_1",
    "gray_1_1",
    "cmyk_1_1",
    "size_1_1",
    "nomask_1_1",
    "empty_1_1",
    "soft_1_1",
    "colour_1_1",
]


def _photo(seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR))


def _box_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[6:18, 8:20] = 255
    return mask


def _clean(root: Path) -> Path:
    folder = root / "HTest"
    for sub in ("composite_images", "masks", "real_images"):
        (folder / sub).mkdir(parents=True)
    for i, name in enumerate(NAMES):
        real_id, mask_id = name.split("_")[0], name.rsplit("_", 1)[0]
        Image.fromarray(_photo(i)).save(folder / "real_images" / f"{real_id}.jpg", quality=95)
        Image.fromarray(_photo(i + 100)).save(folder / "composite_images" / f"{name}.jpg", quality=95)
        Image.fromarray(_box_mask()).save(folder / "masks" / f"{mask_id}.png")
    (folder / "HTest_train.txt").write_text("".join(f"{n}.jpg\n" for n in NAMES))
    (folder / "HTest_test.txt").write_text("ok_1_1.jpg\n")
    return folder


def _plant_faults(folder: Path) -> None:
    comp, real, masks = folder / "composite_images", folder / "real_images", folder / "masks"
    data = (comp / "trunc_1_1.jpg").read_bytes()
    (comp / "trunc_1_1.jpg").write_bytes(data[: len(data) * 3 // 4])  # header intact, scan cut
    (real / "zero.jpg").write_bytes(b"")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = _box_mask()  # black colour, the object in alpha
    Image.fromarray(rgba, "RGBA").save(masks / "alpha_1.png")
    Image.fromarray(_box_mask().astype(np.uint16) * 257).save(masks / "deep_1.png")  # 16-bit, 0 and 65535
    Image.fromarray(_photo(5)).convert("L").save(real / "gray.jpg")
    Image.fromarray(_photo(6)).convert("CMYK").save(comp / "cmyk_1_1.jpg")
    Image.fromarray(_photo(7, (H + 2, W))).save(real / "size.jpg")
    (masks / "nomask_1.png").unlink()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / "empty_1.png")
    ramp = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    Image.fromarray(ramp).save(masks / "soft_1.png")
    colour = np.stack([_box_mask(), np.zeros((H, W), np.uint8), _box_mask()], axis=2)
    Image.fromarray(colour).save(masks / "colour_1.png")
    (folder / "HTest_test.txt").write_bytes(b"ok_1_1.jpg\r\n\r\nbroken.jpg\r\n")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Path:
    folder = _clean(tmp_path_factory.mktemp("faulty"))
    _plant_faults(folder)
    return folder


def test_clean_dataset_has_no_problems(tmp_path):
    _clean(tmp_path)
    assert check_dataset(tmp_path) == []
    assert main([str(tmp_path)]) == 0


def test_every_planted_fault_is_found(faulty):
    found: dict[tuple[str, str], str] = {}
    for p in check_dataset(faulty.parent):
        found[p.severity, p.path.name] = found.get((p.severity, p.path.name), "") + p.message + " | "
    expected_errors = {
        "trunc_1_1.jpg": "truncated",
        "zero.jpg": "0 bytes",
        "size_1_1.jpg": "real image size.jpg is 32x26",
        "nomask_1.png": "does not exist (named by HTest_train.txt line 9)",
        "empty_1.png": "empty",
        "soft_1.png": "not binary",
        "colour_1.png": "channels that differ",
        "HTest_test.txt": "line 3: composite name 'broken'",
    }
    for name, words in expected_errors.items():
        assert words in found.get(("error", name), ""), (name, found)
    expected_warnings = {
        "alpha_1.png": "alpha",
        "deep_1.png": "16-bit",
        "gray.jpg": "grayscale",
        "cmyk_1_1.jpg": "CMYK",
        "HTest_test.txt": "CRLF",
    }
    for name, words in expected_warnings.items():
        assert words in found.get(("warning", name), ""), (name, found)
    handled = {"alpha_1.png", "deep_1.png", "gray.jpg", "cmyk_1_1.jpg", "ok.jpg", "ok_1.png", "ok_1_1.jpg"}
    assert not [key for key in found if key[0] == "error" and key[1] in handled]
    assert sum(found[k].count(" | ") for k in found if k[0] == "error") == len(expected_errors)


def test_quick_mode_skips_decoding(faulty):
    names = {(p.severity, p.path.name) for p in check_dataset(faulty.parent, decode=False)}
    assert ("error", "zero.jpg") in names and ("error", "nomask_1.png") in names
    assert ("error", "size_1_1.jpg") in names  # sizes come from headers
    assert ("error", "empty_1.png") not in names  # mask values need decoding


def test_cli_prints_every_problem_and_fails(faulty, capsys):
    assert main([str(faulty.parent), "--split", "train"]) == 1
    out = capsys.readouterr().out
    bad = ["composite_images/trunc_1_1.jpg", "real_images/zero.jpg", "composite_images/size_1_1.jpg"]
    bad += ["masks/nomask_1.png", "masks/empty_1.png", "masks/soft_1.png", "masks/colour_1.png"]
    for rel in bad:
        assert f"error   {faulty / rel}: " in out
    assert "11 pair(s) checked, 7 error(s), 4 warning(s)" in out  # the CRLF test list is not read for --split train


def test_handled_formats_read_correctly(faulty):
    mask = _box_mask() / 255.0
    np.testing.assert_array_equal(read_mask(faulty / "masks" / "alpha_1.png"), mask)  # alpha-only mask
    np.testing.assert_array_equal(read_mask(faulty / "masks" / "deep_1.png"), mask)  # 16-bit
    np.testing.assert_array_equal(read_mask(faulty / "masks" / "colour_1.png"), mask)  # channel 0
    gray = read_rgb(faulty / "real_images" / "gray.jpg")
    assert gray.shape == (H, W, 3) and (gray[..., 0] == gray[..., 2]).all()
    cmyk = read_rgb(faulty / "composite_images" / "cmyk_1_1.jpg").astype(int)
    assert cmyk.shape == (H, W, 3) and np.abs(cmyk - _photo(6)).mean() < 12  # CMYK JPEG round trip


def test_unreadable_files_raise_dataset_error_naming_the_file(faulty, tmp_path):
    for path in (faulty / "composite_images" / "trunc_1_1.jpg", faulty / "real_images" / "zero.jpg"):
        with pytest.raises(DatasetError, match=str(path)):
            read_rgb(path)
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="not an image"):
        read_mask(text)
    with pytest.raises(DatasetError, match="does not exist"):
        read_rgb(tmp_path / "absent.jpg")


def test_missing_list_and_root(tmp_path):
    folder = _clean(tmp_path)
    shutil.rmtree(folder / "real_images")
    problems = check_dataset(tmp_path, split="train")
    assert len(problems) == len(NAMES) and all(p.severity == "error" for p in problems)
    assert check_dataset(tmp_path / "absent")[0].message == "dataset root is not a directory"


def test_require_valid_refuses_a_broken_dataset(faulty, tmp_path):
    with pytest.raises(DatasetError, match=r"nomask_1\.png: file does not exist") as info:
        require_valid(faulty.parent)
    assert "zero.jpg: file is empty" in str(info.value)
    _clean(tmp_path)
    assert require_valid(tmp_path) == []
