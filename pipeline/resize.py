"""OpenCV's INTER_LINEAR resize of uint8 images, bit for bit, in numpy (OpenCV is not a dependency).

iSSAM, and so the papers' "Fixed256" numbers, resize the uint8 composite and real image with
cv2.resize(..., interpolation=cv2.INTER_LINEAR). Its 8-bit path is fixed point, so a float
bilinear resize rounded to integers differs from it by one grey level in about a tenth of the
values. `cv2_linear_resize_u8` reproduces it exactly: tests/test_resize.py checks it against
outputs of OpenCV 4.10 and 5.0 stored in tests/fixtures/resize (and against cv2 itself when it
is installed).
"""

from __future__ import annotations

import numpy as np

COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
COEF_SCALE = 1 << COEF_BITS


def _coefficients(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray]:
    """First source index and the two 11-bit fixed-point weights of each output position.

    As OpenCV computes them: the position in float32, weights rounded from float32 to the nearest
    integer after scaling by 2048. Horizontally a position outside the image takes the border
    pixel with weights (2048, 0); vertically OpenCV keeps the weights and only clamps the row
    indices, so a border row is weighted twice (which its two truncations make differ by one).
    """
    scale = 1.0 / (dst / src)  # OpenCV: scale_x = 1 / inv_scale_x, in double
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(f).astype(np.int64)
    f = (f - index.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low = index < 0
        f[low], index[low] = 0.0, 0
        high = index >= src - 1
        f[high], index[high] = 0.0, src - 1
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    w0 = np.rint((np.float32(1.0) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    return index, np.stack([w0, w1], axis=1)


def cv2_linear_resize_u8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for uint8 HxW or HxWxC.

    OpenCV's 8-bit bilinear runs two fixed-point passes: horizontally, integer weights summing
    to 2048 give 2^11-scaled sums; vertically its vectorised kernel shifts each sum right by 4,
    takes the high 16 bits of its product with the 2^11 row weight, adds the two and rounds off
    2 more bits (tests/test_resize.py checks this against OpenCV for any row length). An exact
    2x reduction goes through INTER_AREA in OpenCV, which gives the same numbers.
    """
    if image.dtype != np.uint8:
        raise TypeError(f"cv2_linear_resize_u8 takes uint8, got {image.dtype}")
    squeeze = image.ndim == 2
    src = image[:, :, None] if squeeze else image
    h, w = src.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    xi, xw = _coefficients(w, width, clamp_weights=True)
    yi, yw = _coefficients(h, height, clamp_weights=False)
    xn = np.minimum(xi + 1, w - 1)
    s = src.astype(np.int64)
    rows = s[:, xi] * xw[None, :, 0, None] + s[:, xn] * xw[None, :, 1, None]  # (h, width, C), scale 2^11
    yn = np.clip(yi + 1, 0, h - 1)
    yi = np.clip(yi, 0, h - 1)
    top = ((rows[yi] >> 4) * yw[:, 0, None, None]) >> 16
    bottom = ((rows[yn] >> 4) * yw[:, 1, None, None]) >> 16
    out = np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)
    return out[:, :, 0] if squeeze else out
