"""Kernel test cases shared by the tests, bench/gpu_smoke.py and the benchmarks: masks, shapes, tolerances.

Masks come in the kinds a kernel must get right: "empty", "full", "one_pixel" (a single
foreground pixel), "blob" (one to three filled ellipses covering 5-50% of the image, as the
object masks of iHarmony4 and ccHarmony do), "soft" (uniform in [0, 1]), "binary" (i.i.d.
pixels: a stress case, not a realistic one) and "mixed" (a different kind per sample).
Benchmarks use "blob": i.i.d. pixels would hide what skipping background tiles gains and
change how much of each tile is foreground.

Tolerances are (atol, rtol) with atol relative to the largest magnitude of the expected
tensor; see `assert_close`.
"""

from __future__ import annotations

import math

import torch

MASK_KINDS = ("empty", "full", "one_pixel", "blob", "soft", "binary", "mixed")
BLOB_FRACTION = (0.05, 0.5)  # foreground share of a realistic object mask

# (atol, rtol) per op, where it runs and dtype. Interpreter: fp32 against an fp32 reference of
# the same inputs. GPU: tl.dot rounds fp32 operands to TF32 (as cuDNN does by default), bf16 has
# an 8-bit mantissa on x*m*s, the weights and the result; references run in fp64 there.
TOLERANCES = {
    ("modconv", "interpreter"): {torch.float32: (2e-5, 1e-4), torch.float16: (2e-3, 1e-2)},
    ("modconv", "gpu"): {torch.float32: (2e-3, 1e-2), torch.float16: (2e-3, 1e-2), torch.bfloat16: (1.5e-2, 3e-2)},
    ("relation", "interpreter"): {torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 2e-3)},
    ("relation", "gpu"): {torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1e-2, 1.6e-2)},
}

# (channels, side) of the GiftNet sites for a 256x256 input, and the batch of training.
GIFTNET_SITES = {"E1": (32, 256), "E2": (64, 128), "E3": (128, 64), "E4": (256, 32), "D2": (64, 128), "D3": (32, 256)}
TRAIN_BATCH = 16


def tolerance(op: str, where: str, dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) of `op` ("modconv" or "relation") run `where` ("interpreter" or "gpu") in `dtype`."""
    return TOLERANCES[op, where][dtype]


def _generator(gen: torch.Generator | None) -> torch.Generator:
    return gen if gen is not None else torch.Generator().manual_seed(torch.initial_seed() % 2**63)


def blob_mask(
    h: int, w: int, gen: torch.Generator, fraction: tuple[float, float] = BLOB_FRACTION, blobs: int | None = None
) -> torch.Tensor:
    """(1, 1, h, w) binary mask of 1-3 filled ellipses, their union covering about `fraction` of the image.

    The target share is drawn uniformly in `fraction`; ellipses are placed anywhere (they may
    touch the border, as objects in photos do). At least one pixel is always foreground.
    """
    n = blobs if blobs is not None else int(torch.randint(1, 4, (1,), generator=gen))
    target = fraction[0] + (fraction[1] - fraction[0]) * float(torch.rand((), generator=gen))
    yy = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xx = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    mask = torch.zeros(h, w, dtype=torch.bool)
    for i in range(n):
        share = target * (0.6 if i == 0 and n > 1 else 1.0 / n)  # the first blob is the main object
        aspect = 0.5 + float(torch.rand((), generator=gen))  # ry / rx in [0.5, 1.5]
        area = share * h * w
        rx = max(0.5, math.sqrt(area / (math.pi * aspect)))
        ry = max(0.5, rx * aspect)
        cy = float(torch.rand((), generator=gen)) * h
        cx = float(torch.rand((), generator=gen)) * w
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    if not mask.any():
        mask[h // 2, w // 2] = True
    return mask.float()[None, None]


def make_mask(kind: str, b: int, h: int, w: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """A (b, 1, h, w) fp32 CPU mask of one of MASK_KINDS (seeded by `gen`, else torch's seed)."""
    gen = _generator(gen)
    if kind == "mixed":
        kinds = ("empty", "one_pixel", "soft", "full", "blob")
        return torch.cat([make_mask(kinds[i % len(kinds)], 1, h, w, gen) for i in range(b)])
    if kind == "empty":
        return torch.zeros(b, 1, h, w)
    if kind == "full":
        return torch.ones(b, 1, h, w)
    if kind == "one_pixel":
        m = torch.zeros(b, 1, h * w)
        m[:, :, (h * w) // 2] = 1.0
        return m.reshape(b, 1, h, w)
    if kind == "blob":
        return torch.cat([blob_mask(h, w, gen) for _ in range(b)])
    if kind == "soft":
        return torch.rand(b, 1, h, w, generator=gen)
    if kind == "binary":
        return (torch.rand(b, 1, h, w, generator=gen) > 0.5).float()
    raise ValueError(f"make_mask: kind must be one of {MASK_KINDS}, got {kind!r}")


def make_features(
    b: int,
    c: int,
    h: int,
    w: int,
    layout: str,
    dtype: torch.dtype,
    *,
    scale: float = 1.0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Random (b, c, h, w) leaf features needing grad, in NCHW ("nchw"), channels_last ("cl") or "strided"
    (H and W swapped in memory: pixels not evenly spaced, so the op must copy)."""
    x = (torch.randn(b, c, h, w) * scale).to(dtype)
    if layout == "cl":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    elif layout != "nchw":
        raise ValueError(f"make_features: layout must be nchw, cl or strided, got {layout!r}")
    return x.to(device).requires_grad_(True)


def modconv_inputs(
    b: int, c: int, h: int, w: int, mask: str, gen: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """fp32 CPU inputs of the masked modulated conv near a GIFT init: x, weight, style, mask, dy."""
    gen = _generator(gen)
    return {
        "x": torch.randn(b, c, h, w, generator=gen),
        "weight": torch.randn(c, c, 3, 3, generator=gen) / (3.0 * c**0.5),
        "style": torch.rand(b, c, generator=gen) + 0.5,
        "mask": make_mask(mask, b, h, w, gen),
        "dy": torch.randn(b, c, h, w, generator=gen),
    }


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> None:
    """torch.testing.assert_close with atol relative to max(1, the expected tensor's largest magnitude)."""
    scale = max(1.0, want.detach().abs().max().item()) if want.numel() else 1.0
    torch.testing.assert_close(
        got.detach().to(want.dtype), want.detach(), atol=atol * scale, rtol=rtol, msg=lambda m: f"{name}: {m}"
    )
