"""ccHarmony polynomial matching: released matrices reproduced from released patch colours; the builder."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet.pipeline.builders.cc_matching import (
    STANDARD_PATCHES,
    apply_polynomial,
    fit_polynomial,
    load_matrix,
    poly_terms,
    read_patch_csv,
    transfer,
)
from giftnet.pipeline.builders.ccharmony import main
from giftnet.pipeline.check import check_dataset
from giftnet.pipeline.ihd import read_pairs
from giftnet.pipeline.images import read_mask, read_rgb
from giftnet.pipeline.pairs import DatasetError

FIXTURES = Path(__file__).parent / "fixtures" / "ccharmony"
REPRODUCING = ["8D5U5531", "IMG_0323", "IMG_0610", "SonyA57_0070"]
NOT_REPRODUCING = "PanasonicGX1_0049"  # one of the 10 released forward matrices that no fit of its CSV gives
IDENTITY = np.zeros((3, 11))
IDENTITY[0, 0] = IDENTITY[1, 1] = IDENTITY[2, 2] = 1.0


def _released(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    patches = read_patch_csv(FIXTURES / "patch_colors" / f"{name}.csv")
    forward = load_matrix(FIXTURES / "matrices" / f"{name}.npy")
    reverse = load_matrix(FIXTURES / "matrices" / f"{name}_reverse.npy")
    return patches, forward, reverse


def test_poly_terms_order():
    terms = poly_terms(np.array([2.0, 3.0, 5.0]))
    np.testing.assert_array_equal(terms, [2, 3, 5, 6, 10, 15, 4, 9, 25, 30, 1])
    assert poly_terms(np.zeros((4, 5, 3))).shape == (4, 5, 11)


@pytest.mark.parametrize("name", REPRODUCING)
def test_fit_reproduces_released_matrices(name):
    patches, forward, reverse = _released(name)
    np.testing.assert_allclose(fit_polynomial(patches, STANDARD_PATCHES), forward, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(fit_polynomial(STANDARD_PATCHES, patches), reverse, rtol=1e-7, atol=1e-8)


def test_non_reproducing_forward_matrix_is_not_the_least_squares_fit():
    """docs/data.md: 340 of 350 forward matrices reproduce. For the others the released matrix fits the released
    patch colours worse than our least-squares fit does, so it was fit to other measurements; the reverse
    matrix of the same photo reproduces, and our fit maps the patches to the standard within a few levels."""
    patches, forward, reverse = _released(NOT_REPRODUCING)
    ours = fit_polynomial(patches, STANDARD_PATCHES)
    np.testing.assert_allclose(fit_polynomial(STANDARD_PATCHES, patches), reverse, rtol=1e-7, atol=1e-8)
    assert np.abs(ours - forward).max() > 1.0

    def rms(T):
        return float(np.sqrt(np.mean((poly_terms(patches) @ T.T - STANDARD_PATCHES) ** 2)))

    assert rms(ours) < rms(forward)
    assert rms(ours) < 5.0  # 4.1 levels on 0-255; the released matrix: 11.1


def test_fit_recovers_an_exact_polynomial():
    rng = np.random.default_rng(3)
    T = rng.normal(size=(3, 11)) * np.array([1, 1, 1, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-6, 10])
    src = rng.uniform(0, 255, size=(24, 3))
    np.testing.assert_allclose(fit_polynomial(src, poly_terms(src) @ T.T), T, rtol=1e-6, atol=1e-9)


def test_apply_and_transfer():
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_polynomial(image, IDENTITY), image.astype(np.float64))
    np.testing.assert_array_equal(transfer(image, IDENTITY, IDENTITY), image)
    doubled = IDENTITY * 2.0
    assert apply_polynomial(image, doubled).max() == 255.0  # clipped
    patches, forward, _ = _released("IMG_0610")
    _, _, reverse = _released("SonyA57_0070")
    expected = np.clip(poly_terms(np.clip(poly_terms(image) @ forward.T, 0, 255)) @ reverse.T, 0, 255)
    np.testing.assert_array_equal(transfer(image, forward, reverse), np.rint(expected).astype(np.uint8))
    # T'_a(T_a(x)) brings a photo's own patches back close to themselves
    round_trip = transfer(patches, forward, fit_polynomial(STANDARD_PATCHES, patches)).astype(float)
    assert np.sqrt(np.mean((round_trip - patches) ** 2)) < 6.0
    with pytest.raises(ValueError, match="T_a"):
        transfer(image, np.zeros((3, 10)), IDENTITY)


def test_patch_csv_errors_name_the_file(tmp_path):
    bad = tmp_path / "X.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(DatasetError, match=r"X\.csv: expected 24 rows"):
        read_patch_csv(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        read_patch_csv(tmp_path / "absent.csv")


def _photos(folder: Path) -> None:
    """Stand-ins for the unreleased photos, with the aspect ratios of the released fixture masks."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in (("8D5U5531", (203, 101)), ("IMG_0323", (180, 146))):
        smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size))
        Image.fromarray(smooth).save(folder / f"{name}.jpg", quality=98)


def test_builder_writes_transitive_composites(tmp_path):
    _photos(tmp_path / "photos")
    (tmp_path / "train.txt").write_text("IMG_0323_a\n")
    (tmp_path / "test.txt").write_text("8D5U5531_a\n")
    args = ["--photos", str(tmp_path / "photos"), "--masks", str(FIXTURES / "masks"), "--out", str(tmp_path / "cc")]
    args += ["--patches", str(FIXTURES / "patch_colors"), "--per-foreground", "2"]
    assert main([*args, "--train-list", str(tmp_path / "train.txt"), "--test-list", str(tmp_path / "test.txt")]) == 0
    root = tmp_path / "cc"
    assert check_dataset(root) == []
    train, test = read_pairs(root, split="train"), read_pairs(root, split="test")
    assert [p.name for p in train] == ["IMG-0323_a_1", "IMG-0323_a_2"]
    assert [p.name for p in test] == ["8D5U5531_a_1", "8D5U5531_a_2"]
    rows = [line.split(",") for line in (root / "ccHarmony" / "pairs.csv").read_text().splitlines()[1:]]
    for pair, row in zip(train + test, rows[2:] + rows[:2], strict=True):
        assert row[0] == pair.composite.name and row[3] != row[1]
        real, composite, mask = read_rgb(pair.real), read_rgb(pair.composite), read_mask(pair.mask) > 0.5
        assert mask.shape == real.shape[:2] and 0.02 < mask.mean() < 0.5  # released mask resized to the photo
        T_a = fit_polynomial(read_patch_csv(FIXTURES / "patch_colors" / f"{row[1]}.csv"), STANDARD_PATCHES)
        T_b = fit_polynomial(STANDARD_PATCHES, read_patch_csv(FIXTURES / "patch_colors" / f"{row[3]}.csv"))
        expected = transfer(real[mask], T_a, T_b).astype(float)
        assert np.abs(composite[mask] - expected).mean() < 2.0  # JPEG quality 95
        assert np.abs(composite[mask].astype(float) - real[mask]).mean() > 5.0
        assert np.abs(composite[~mask].astype(float) - real[~mask]).mean() < 1.0


def test_builder_rejects_bad_input(tmp_path, capsys):
    _photos(tmp_path / "photos")
    args = ["--photos", str(tmp_path / "photos"), "--masks", str(tmp_path / "none"), "--out", str(tmp_path / "cc")]
    assert main([*args, "--patches", str(FIXTURES / "patch_colors")]) == 2
    assert "--masks does not exist" in capsys.readouterr().err
    assert main(args) == 2  # neither --patches nor --matrices
    assert "give --patches" in capsys.readouterr().err
    not_zip = tmp_path / "masks.zip"
    not_zip.write_bytes(b"not a zip")
    args[3] = str(not_zip)
    assert main([*args, "--patches", str(FIXTURES / "patch_colors")]) == 2
    assert "neither a folder nor a zip" in capsys.readouterr().err


def _zip(folder: Path, archive: Path, top: str) -> Path:
    """A zip laid out as the released ones: every file under one top-level folder."""
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.iterdir()):
            z.write(path, f"{top}/{path.name}")
    return archive


def test_builder_with_released_zips_and_matrices_only(tmp_path, capsys):
    """--matrices without --patches; masks and matrices as the released zips; counts reported."""
    _photos(tmp_path / "photos")
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in (FIXTURES / "masks").iterdir():
        shutil.copy(path, masks / path.name)
    shutil.copy(FIXTURES / "masks" / "IMG_0323_a.png", masks / "IMG_0610_a.png")  # a photo we do not have
    shutil.copy(FIXTURES / "masks" / "IMG_0323_a.png", masks / "IMG_0323_b.png")  # in neither list
    (tmp_path / "train.txt").write_text("IMG_0323_a\nIMG_0610_a\n")
    (tmp_path / "test.txt").write_text("8D5U5531_a\n")
    mask_zip = _zip(masks, tmp_path / "foreground_masks.zip", "foreground_masks")
    matrix_zip = _zip(FIXTURES / "matrices", tmp_path / "coefficients.zip", "polynomial_matching_coefficients")
    args = ["--photos", str(tmp_path / "photos"), "--masks", str(mask_zip), "--matrices", str(matrix_zip)]
    args += ["--out", str(tmp_path / "cc"), "--per-foreground", "1"]
    args += ["--train-list", str(tmp_path / "train.txt"), "--test-list", str(tmp_path / "test.txt")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "built 2 foregrounds (2 composites), skipped 1 (in neither split list), missing 1 (no photo)" in out
    assert "IMG_0610_a" in out
    assert len(read_pairs(tmp_path / "cc", split="all")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["photos", "masks", "train.txt", "test.txt", "foreground_masks.zip", "coefficients.zip", "cc"]
    )  # the zips are unpacked elsewhere and removed


def test_unsafe_zip_members_are_refused(tmp_path):
    from giftnet.pipeline.builders.unpack import folder_or_zip

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../outside.png", b"x")
    with pytest.raises(DatasetError, match="unsafe member"), folder_or_zip(archive, "--masks"):
        pass
    assert not (tmp_path.parent / "outside.png").exists()


def test_builder_with_released_matrices(tmp_path):
    _photos(tmp_path / "photos")
    args = ["--photos", str(tmp_path / "photos"), "--masks", str(FIXTURES / "masks"), "--out", str(tmp_path / "cc")]
    args += ["--patches", str(FIXTURES / "patch_colors"), "--matrices", str(FIXTURES / "matrices")]
    assert main([*args, "--per-foreground", "1", "--seed", "3"]) == 0
    pairs = read_pairs(tmp_path / "cc", split="all")
    assert len(pairs) == 2  # no split lists: whole photos go to train or test by a hash of the name
    rows = {r.split(",")[0]: r.split(",") for r in (tmp_path / "cc/ccHarmony/pairs.csv").read_text().splitlines()}
    for pair in pairs:
        _, photo, _, target, _ = rows[pair.composite.name]
        real, composite, mask = read_rgb(pair.real), read_rgb(pair.composite), read_mask(pair.mask) > 0.5
        expected = transfer(real[mask], _released(photo)[1], _released(target)[2]).astype(float)
        assert np.abs(composite[mask] - expected).mean() < 2.0
