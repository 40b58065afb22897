"""One decoder for every path (issue 11): bit depth, palette, CMYK, alpha and EXIF orientation mean the
same pixels to the checker, both loaders (DALI included), evaluate and harmonize; a file declaring
more pixels than the budget is refused from its header."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import png_bytes
from PIL import Image

from giftnet.errors import DataError
from giftnet.pipeline import dali_eval, dali_loader, images
from giftnet.pipeline.check import check_dataset
from giftnet.pipeline.loaders import make_eval_loader, make_train_loader
from giftnet.pipeline.pairs import Pair

H, W = 24, 40
needs_dali = pytest.mark.skipif(dali_loader.DALI_IMPORT_ERROR is not None, reason="DALI not importable")
BACKENDS = ["torch", pytest.param("dali", marks=needs_dali)]


def _photo(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 4, 0), 4, 1))


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def rgb16_png(values: np.ndarray) -> bytes:
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(values.shape[0]))
    return png_bytes(values.shape[1], values.shape[0], 16, 2, rows)


GRAY16 = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 67 % 65536).astype(np.uint16)
RGB16 = (np.random.default_rng(1).integers(0, 65536, (H, W, 3))).astype(np.uint16)


def _write(path: Path, kind: str) -> Path:
    photo = Image.fromarray(_photo())
    writers = {
        "jpeg": lambda: photo.save(path, "JPEG", quality=95),
        "jpeg_exif6": lambda: photo.save(path, "JPEG", quality=95, exif=_exif(6)),
        "jpeg_exif3": lambda: photo.save(path, "JPEG", quality=95, exif=_exif(3)),
        "png_exif8": lambda: photo.save(path, "PNG", exif=_exif(8)),
        "png16_gray": lambda: Image.fromarray(GRAY16).save(path, "PNG"),
        "png16_rgb": lambda: path.write_bytes(rgb16_png(RGB16)),
        "palette": lambda: photo.quantize(16).save(path, "PNG"),
        "cmyk": lambda: photo.convert("CMYK").save(path, "JPEG", quality=95),
        "rgba": lambda: Image.fromarray(np.dstack([_photo(), _photo(2)[:, :, 0]]), "RGBA").save(path, "PNG"),
        "la": lambda: photo.convert("LA").save(path, "PNG"),
        "gray_jpeg": lambda: photo.convert("L").save(path, "JPEG", quality=95),
        "tiff": lambda: photo.save(path, "TIFF"),
        "bmp": lambda: photo.save(path, "BMP"),
    }
    writers[kind]()
    return path


KINDS = ["jpeg", "jpeg_exif6", "jpeg_exif3", "png_exif8", "png16_gray", "png16_rgb", "palette", "cmyk", "rgba", "la", "gray_jpeg", "tiff", "bmp"]  # fmt: skip


# ---- the policy -----------------------------------------------------------------------------------


def test_sixteen_bit_keeps_the_top_eight_bits_gray_and_rgb_alike(tmp_path):
    """Before: 16-bit gray through the PyTorch loader's convert("RGB") became 0/255."""
    gray = images.read_rgb(_write(tmp_path / "g.png", "png16_gray"))
    np.testing.assert_array_equal(gray, np.repeat((GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, 2))
    assert len(np.unique(gray)) > 100  # not clipped to 0 and 255
    rgb = images.read_rgb(_write(tmp_path / "c.png", "png16_rgb"))
    np.testing.assert_array_equal(rgb, (RGB16 >> 8).astype(np.uint8))
    assert images.read_header(tmp_path / "g.png").sixteen_bit and images.read_header(tmp_path / "c.png").sixteen_bit


@pytest.mark.parametrize(("orientation", "turn"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    upright = _photo()
    stored = np.rot90(upright, -turn)  # what a camera stores for that orientation
    path = tmp_path / "p.png"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=_exif(orientation))
    np.testing.assert_array_equal(images.read_rgb(path), upright)
    header = images.read_header(path)
    assert header.size == (W, H) and header.orientation == orientation
    assert f"rotated by EXIF (orientation {orientation})" in header.notes()


def test_pixel_budget_is_decided_from_the_header(tmp_path, bomb_png):
    """Before: a PNG of under 100 bytes declaring 100000x100000 crashed the checker (DecompressionBombError)."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png)
    assert len(bomb_png) < 100
    for read in (images.read_header, images.read_rgb, images.read_mask, images.dali_bytes):
        with pytest.raises(DataError, match=rf"{bomb}: .*budget"):
            read(bomb)
    # Also below Pillow's own limit: our budget, not Pillow's, decides.
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(12_000, 12_000, 8, 0, b"\x00" * 13))
    with pytest.raises(DataError, match=r"declares 12000x12000 pixels, over the decoder's budget"):
        images.read_header(big)


def test_checker_reports_what_the_loaders_do(tmp_path, bomb_png):
    folder = tmp_path / "S"
    for sub in ("composite_images", "masks", "real_images"):
        (folder / sub).mkdir(parents=True)
    mask = np.zeros((H, W), np.uint8)
    mask[4:20, 8:30] = 255
    Image.fromarray(mask).save(folder / "masks" / "a_1.png")
    Image.fromarray(mask).save(folder / "masks" / "b_1.png")
    # A composite stored sideways with EXIF 6: after rotation it matches its upright real image.
    Image.fromarray(np.ascontiguousarray(np.rot90(_photo(), 1))).save(
        folder / "composite_images" / "a_1_1.jpg", quality=95, exif=_exif(6)
    )
    Image.fromarray(_photo()).save(folder / "real_images" / "a.jpg", quality=95)
    Image.fromarray(_photo()).save(folder / "composite_images" / "b_1_1.jpg", quality=95)
    Image.fromarray(GRAY16[:H, :W]).save(folder / "real_images" / "b.jpg", "PNG")  # a PNG named .jpg
    (folder / "S_train.txt").write_text("a_1_1.jpg\nb_1_1.jpg\n")
    found = {(p.severity, p.path.name): p.message for p in check_dataset(tmp_path, split="train")}
    assert not [k for k in found if k[0] == "error"], found  # sizes compared after the rotation
    assert "rotated by EXIF (orientation 6)" in found["warning", "a_1_1.jpg"]
    assert "16-bit, scaled to 8-bit" in found["warning", "b.jpg"]
    bomb = folder / "composite_images" / "b_1_1.jpg"
    bomb.write_bytes(bomb_png)
    for decode in (False, True):
        found = {(p.severity, p.path): p.message for p in check_dataset(tmp_path, split="train", decode=decode)}
        assert "budget" in found["error", bomb]


# ---- both loaders and DALI see the same pixels -------------------------------------------------------


def _dali_decode(data: np.ndarray) -> np.ndarray:
    from nvidia.dali import fn
    from nvidia.dali.pipeline import Pipeline

    pipe = Pipeline(batch_size=1, num_threads=1, device_id=None)
    with pipe:
        encoded = fn.external_source(source=lambda: [data], batch=True)
        pipe.set_outputs(dali_loader.decoder(torch.device("cpu"), sliced=False)(encoded))
    pipe.build()
    (out,) = pipe.run()
    return np.array(out.as_tensor())[0]


@needs_dali
@pytest.mark.parametrize("kind", KINDS)
def test_dali_decodes_the_bytes_it_is_fed_to_the_shared_decoders_pixels(tmp_path, kind):
    """DALI's decoder ignores EXIF here and scales 16-bit as rint(v/257): such files reach it re-encoded."""
    path = _write(tmp_path / "x.img", kind)
    np.testing.assert_array_equal(_dali_decode(dali_eval.read_bytes(path)), images.read_rgb(path))


@needs_dali
def test_dali_alone_would_disagree_which_is_why_files_are_routed(tmp_path):
    """The facts the routing rests on: stored bytes decoded by DALI differ for EXIF-rotated and 16-bit files."""
    rotated = _write(tmp_path / "r.jpg", "jpeg_exif6")
    raw = _dali_decode(np.fromfile(rotated, np.uint8))
    assert raw.shape[:2] == (H, W) and images.read_rgb(rotated).shape[:2] == (W, H)  # DALI: not rotated
    deep = _write(tmp_path / "d.png", "png16_rgb")
    raw = _dali_decode(np.fromfile(deep, np.uint8)).astype(int)
    assert np.abs(raw - np.rint(RGB16 / 257.0)).max() == 0  # DALI rounds; Pillow keeps the top byte
    assert (
        not images.read_header(deep).dali_native and images.read_header(_write(tmp_path / "p.jpg", "jpeg")).dali_native
    )


def _pair_folder(root: Path, rotated: bool) -> Pair:
    """A pair whose photos and mask are stored upright, or sideways with EXIF orientation 6."""
    root.mkdir()
    mask = np.zeros((H, W), np.uint8)
    mask[4:16, 20:36] = 255  # off-centre: a missed rotation cannot look the same
    arrays = {"c.png": _photo(3), "r.png": _photo(4), "m.png": mask}
    for name, array in arrays.items():
        if rotated:
            Image.fromarray(np.ascontiguousarray(np.rot90(array, 1))).save(root / name, exif=_exif(6))
        else:
            Image.fromarray(array).save(root / name)
    return Pair(root / "c.png", root / "m.png", root / "r.png", "S", "c_1_1")


@pytest.mark.parametrize("backend", BACKENDS)
def test_exif_rotated_pairs_train_and_evaluate_as_upright_ones(tmp_path, backend):
    """Before: the train and eval loaders ignored EXIF (harmonize applied it): a rotated photo misaligned."""
    upright, rotated = _pair_folder(tmp_path / "u", False), _pair_folder(tmp_path / "r", True)
    workers = 0 if backend == "torch" else 1
    got = {}
    for name, pair in (("upright", upright), ("rotated", rotated)):
        train = make_train_loader([pair] * 2, batch_size=2, crop_size=16, backend=backend, num_workers=workers)
        ev = make_eval_loader([pair], batch_size=1, size=16, backend=backend, num_workers=workers)
        got[name] = (next(iter(train.epoch(1))), next(iter(ev)))
    for a, b in zip(got["upright"], got["rotated"], strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


@needs_dali
def test_both_backends_agree_on_a_sixteen_bit_photo(tmp_path):
    pair = Pair(tmp_path / "c.png", tmp_path / "m.png", tmp_path / "r.png", "S", "c_1_1")
    pair.composite.write_bytes(rgb16_png(RGB16))
    Image.fromarray(GRAY16).save(pair.real)
    mask = np.zeros((H, W), np.uint8)
    mask[4:16, 4:20] = 255
    Image.fromarray(mask).save(pair.mask)
    torch_batch, dali_batch = (
        next(iter(make_eval_loader([pair], batch_size=1, size=16, backend=b, num_workers=1))) for b in ("torch", "dali")
    )
    for key in ("composite_255", "real_255"):
        assert float((torch_batch[key] - dali_batch[key]).abs().max()) <= 1.0, key  # resize rounding only
    real = torch_batch["real_255"]
    assert len(torch.unique(real)) > 20  # not clipped to 0/255


def test_harmonize_reads_through_the_same_decoder(tmp_path):
    from giftnet import harmonize

    path = _write(tmp_path / "x.jpg", "jpeg_exif6")
    rgb, alpha = harmonize.read_composite(path)
    np.testing.assert_array_equal(rgb, images.read_rgb(path))
    assert alpha is None and rgb.shape[:2] == (W, H)
    rgba = _write(tmp_path / "a.png", "rgba")
    assert harmonize.read_composite(rgba)[1] is not None


def test_encode_png_round_trips(tmp_path):
    rgb = _photo(7)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(images.encode_png(rgb)))), rgb)
