"""The one image decoder and writer of the package: checker, both loaders, evaluate and harmonize use it.

Policy, decided from the file's header before any pixel is allocated:
- size: a file declaring more than MAX_PIXELS pixels is refused (a PNG of under 100 bytes can declare 10^10);
- EXIF orientation (JPEG, TIFF, WebP, and PNG's eXIf chunk before the pixel data) is applied, so a
  rotated photo stays aligned with its mask whoever reads it;
- 16-bit samples (grayscale or RGB) keep their top 8 bits (v >> 8: 65535 -> 255, 257 k -> k), which
  is what Pillow itself does for 16-bit RGB, so gray and colour agree; 32-bit integer images above
  255 are read as 16-bit, float images as 0-255;
- grayscale is replicated to RGB, palette, CMYK and YCbCr are converted by Pillow, alpha is dropped
  from photos (`read_rgb_alpha` returns it separately for harmonize).
Masks are float32 in [0, 1] from channel 0 (the iHarmony4 convention, "channel 0 / 255"); an
alpha-only mask uses its alpha; 16-bit masks are divided by 65535.

Every failure is a DataError (giftnet.pipeline.pairs.DatasetError) naming the file. Writers go through
giftnet.fileio.atomic_writer: a failed encode or a full disk leaves an existing file intact.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from giftnet.errors import DataError, UsageError
from giftnet.fileio import atomic_writer, check_regular_file

# 2^27 = 134 megapixels (~400 MB as RGB): above any camera photo, below Pillow's own bomb limit.
MAX_PIXELS = 2**27
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_MODE_NOTES = {
    "L": "grayscale, replicated to RGB",
    "LA": "grayscale with alpha: replicated to RGB, alpha dropped",
    "P": "palette, converted to RGB",
    "PA": "palette with alpha: converted to RGB, alpha dropped",
    "CMYK": "CMYK, converted to RGB",
    "YCbCr": "YCbCr, converted to RGB",
    "RGBA": "RGBA: alpha dropped",
    "I": "32-bit integer, read as 16-bit",
    "F": "32-bit float, read as 0-255",
    "1": "1-bit, read as 0/255",
}
# What DALI's decoders read exactly as we do (tested in tests/test_loaders.py); anything else is
# decoded here and handed to DALI re-encoded (see dali_bytes).
_DALI_NATIVE = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L")}


@dataclasses.dataclass(frozen=True)
class Header:
    """What an image file declares, read without decoding its pixels."""

    path: Path
    format: str
    mode: str
    width: int  # after EXIF orientation
    height: int
    orientation: int  # EXIF orientation 1-8 (1: as stored)
    sixteen_bit: bool

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as the readers return the image (orientation applied)."""
        return self.width, self.height

    def notes(self) -> list[str]:
        """What the readers do to this file beyond decoding it (empty for plain 8-bit RGB)."""
        out = []
        if self.orientation != 1:
            out.append(f"rotated by EXIF (orientation {self.orientation})")
        if self.sixteen_bit:
            out.append("16-bit, scaled to 8-bit")
        note = _MODE_NOTES.get(self.mode)
        if note and not (self.sixteen_bit and self.mode == "I"):
            out.append(note)
        return out

    @property
    def dali_native(self) -> bool:
        """Whether DALI's decoder gives exactly this module's pixels for the file's bytes as stored."""
        return (self.format, self.mode) in _DALI_NATIVE and self.orientation == 1 and not self.sixteen_bit


def _orientation(image: Image.Image) -> int:
    # Image.getexif, not PngImageFile.getexif: the latter decodes the pixels to look for an eXIf
    # chunk after them. The policy is the header's orientation, so every reader agrees.
    try:
        value = Image.Image.getexif(image).get(_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _is_sixteen_bit(image: ImageFile.ImageFile) -> bool:
    if image.mode in _SIXTEEN_BIT_MODES:
        return True
    rawmode = image.tile[0].args if image.tile else None
    return isinstance(rawmode, str) and ";16" in rawmode  # Pillow's 16-bit RGB(A) PNG rawmodes


def _open(path: Path) -> ImageFile.ImageFile:
    """Image.open with every failure a DataError; the pixel budget is checked before returning."""
    check_regular_file(path, "image", error=DataError)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own budget decides
            image = Image.open(path)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as err:  # Pillow's own limit, met while parsing the header
        raise DataError(f"{path}: {err}; over the decoder's budget of {MAX_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise DataError(f"{path}: declares {width}x{height} pixels, over the decoder's budget of {MAX_PIXELS}")
    if width < 1 or height < 1:
        image.close()
        raise DataError(f"{path}: declares an empty image ({width}x{height})")
    return image


def _header_of(path: Path, image: ImageFile.ImageFile) -> Header:
    orientation = _orientation(image)
    width, height = image.size
    if orientation >= 5:  # a quarter turn
        width, height = height, width
    return Header(path, image.format or "", image.mode, width, height, orientation, _is_sixteen_bit(image))


def read_header(path: str | Path) -> Header:
    """The header of an image file: size after orientation, mode, bit depth. DataError if unusable."""
    path = Path(path)
    with _open(path) as image:
        return _header_of(path, image)


def open_image(path: str | Path) -> tuple[Image.Image, Header]:
    """Decode an image fully (truncation is found here, not in a worker later), EXIF orientation applied."""
    path = Path(path)
    image = _open(path)
    header = _header_of(path, image)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow reports a cut-off JPEG/PNG as OSError("image file is truncated ...").
        raise DataError(f"{path}: unreadable or truncated image ({err})") from None
    if header.orientation in _TRANSPOSE:
        return image.transpose(_TRANSPOSE[header.orientation]), header
    return image, header


def _sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB from any Pillow mode (see the module's policy); alpha is dropped."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and np.asarray(image).max(initial=0) > 255):
        gray = _sixteen_to_eight(np.asarray(image))
    elif mode in ("I", "F"):
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    else:
        if mode != "RGB":
            image = image.convert("RGB")  # L, LA, P, PA, 1, CMYK (Adobe inverted handled by Pillow), RGBA, YCbCr
        return np.array(image, dtype=np.uint8)  # a writable copy
    return np.repeat(gray[:, :, None], 3, axis=2)


def _alpha(image: Image.Image) -> np.ndarray | None:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return np.ascontiguousarray(np.asarray(image.convert("RGBA").getchannel("A")))
    return None


def read_rgb_alpha(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(HxWx3 uint8 RGB, HxW uint8 alpha or None) of a photo; DataError naming the file."""
    image, _ = open_image(path)
    try:
        return to_rgb(image), _alpha(image)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot convert {image.mode} image to RGB ({err})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """A photo as HxWx3 uint8 RGB; DataError naming the file if it cannot be decoded."""
    return read_rgb_alpha(path)[0]


def mask_channels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour channels HxWxC as float in 0-1, alpha HxW in 0-1 or None) of a mask image."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        array = np.asarray(image).astype(np.float32)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        return (np.clip(array, 0, top) / top)[:, :, None], None
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        top = 255.0 if array.max(initial=0) > 1.0 else 1.0
        return (array / top)[:, :, None], None
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.float32)[:, :, None] / 255.0, None
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode == "CMYK":
        image, mode = image.convert("RGB"), "RGB"
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        return array[:, :, None], None
    if mode in ("LA", "RGBA", "La", "RGBa"):
        return array[:, :, :-1], array[:, :, -1]
    return array, None


def mask_from_channels(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The mask: colour channel 0, except an alpha-only mask (constant colour, varying alpha) uses alpha."""
    first = colour[:, :, 0]
    if alpha is not None and np.ptp(first) == 0 and np.ptp(alpha) > 0:
        return np.ascontiguousarray(alpha, dtype=np.float32)
    return np.ascontiguousarray(first, dtype=np.float32)


def read_mask(path: str | Path) -> np.ndarray:
    """A foreground mask as HxW float32 in [0, 1] (channel 0; 16-bit, alpha-only and EXIF handled)."""
    image, _ = open_image(path)
    try:
        colour, alpha = mask_channels(image)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read {image.mode} mask ({err})") from None
    return mask_from_channels(colour, alpha)


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless, fast PNG bytes of HxWx3 uint8 (level 1: DALI decodes it to exactly these pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def dali_bytes(path: str | Path) -> np.ndarray:
    """The bytes to hand DALI's decoder for a photo, so that DALI sees exactly `read_rgb(path)`.

    Plain 8-bit RGB/gray JPEGs and PNGs without an EXIF rotation go as stored (DALI decodes them as
    Pillow does, on the GPU when there is one). Anything else (EXIF-rotated, 16-bit, palette, CMYK,
    alpha, other formats) is decoded here and re-encoded as a lossless PNG, because DALI would
    scale 16-bit differently and does not read every format Pillow does.
    """
    path = Path(path)
    header = read_header(path)  # budget, regular file, empty file: before reading any byte
    if not header.dali_native:
        return np.frombuffer(encode_png(read_rgb(path)), dtype=np.uint8)
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err})") from None


# ---------------------------------------------------------------------------------------- writers

JPEG_QUALITY = 95


def output_format(path: str | Path, mode: str = "RGB") -> str:
    """The Pillow format `path`'s extension selects; UsageError up front if it cannot hold `mode` images.

    Checked before any work, so an unwritable format (.blp, .xbm for RGB) never reaches a write.
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"{path}: no image format Pillow can write has the extension {path.suffix!r} (use .png)")
    try:
        Image.new(mode, (1, 1)).save(io.BytesIO(), format=fmt)
    except (OSError, ValueError, KeyError) as err:  # the encoder's own refusal of this mode
        raise UsageError(f"{path}: cannot write {mode} images as {fmt} ({err}); use .png") from None
    return fmt


def save_image(path: str | Path, image: Image.Image, **options: object) -> None:
    """Save through atomic_writer in the format of the extension; the old file survives any failure."""
    fmt = output_format(path, image.mode)
    with atomic_writer(path) as f:
        image.save(f, format=fmt, **options)


def write_jpeg(path: str | Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Save HxWx3 uint8 as JPEG with 4:4:4 chroma, so re-encoding differences stay in 8x8 blocks.

    Pillow's encoder is deterministic: the same array gives the same bytes, which the builders rely on.
    """
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    with atomic_writer(path) as f:
        image.save(f, format="JPEG", quality=quality, subsampling=0)


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Save a boolean (or 0-1) HxW mask as an 8-bit single-channel PNG of 0 and 255."""
    binary = np.where(np.asarray(mask) > 0.5, 255, 0).astype(np.uint8)
    with atomic_writer(path) as f:
        Image.fromarray(binary, "L").save(f, format="PNG")


__all__ = [
    "JPEG_QUALITY",
    "MAX_PIXELS",
    "Header",
    "dali_bytes",
    "mask_channels",
    "mask_from_channels",
    "open_image",
    "output_format",
    "read_header",
    "read_mask",
    "read_rgb",
    "read_rgb_alpha",
    "save_image",
    "to_rgb",
    "write_jpeg",
    "write_mask",
]
