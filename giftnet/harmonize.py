"""`python -m giftnet.harmonize`: harmonise a composite (or a folder of them) of any size.

Default mode: the network runs at `size` x `size` (256, its training resolution) and only its
CHANGE is carried back: (prediction - network input) is upsampled bilinearly to the full size,
added to the full-resolution composite and blended with the full-resolution mask, so detail
is kept and pixels where the mask is 0 come out bit-identical. `--full-res` runs the network on
the full image instead, padded (edge replication; mask padded with 0) to a multiple of 8 and
cropped back, so no pixel is resampled; the same mask blend applies.

Inputs are decoded by giftnet.pipeline.images, the decoder the training and evaluation loaders use, so a
file means the same pixels here as in training: EXIF orientation applied to image and mask,
grayscale replicated to RGB (the output is RGB), 16-bit scaled to 8-bit, palette and CMYK
converted; RGBA's colour channels are used as stored and the alpha is re-attached unchanged to
PNG/WebP/TIFF outputs. Masks: channel 0 (an alpha-only mask uses its alpha), 8/16-bit or float,
scaled to [0, 1]; a mask of another size is resized bilinearly to the image with a warning.

Outputs are written atomically (an existing file survives a failed write), in a format checked
before any work, and never onto an input (hard links and symlinks included).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from giftnet.allocator import configure_allocator
from giftnet.errors import UsageError, run_cli
from giftnet.fileio import InputGuard, check_regular_file, output_errors
from giftnet.imagenet import normalise, to_255
from giftnet.messages import first_n
from giftnet.pipeline.images import output_format, read_mask, read_rgb_alpha, save_image
from giftnet.runtime import PRECISIONS, autocast_context, check_device, default_device, load_model, model_device

InputError = UsageError  # the name this module used before giftnet.errors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")


class MaskSizeWarning(UserWarning):
    """The mask's size differs from the image's; it was resized (usually the wrong file)."""


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from HxW / HxWx1 (gray, replicated), HxWx3, or HxWx4 (alpha dropped) uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"composite must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"composite must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def as_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW float32 in [0, 1] matching the image; uint8 is /255, bool 0/1, channel 0 of HxWxC.

    A mask of another size is resized bilinearly, with a warning (it usually means the wrong file).
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW or HxWxC, got shape {mask.shape}")
    if mask.dtype == np.uint8:
        mask = mask.astype(np.float32) / 255.0
    mask = mask.astype(np.float32)
    if not np.isfinite(mask).all() or mask.min(initial=0) < 0 or mask.max(initial=0) > 1:
        raise ValueError("mask values must lie in [0, 1] (divide an 8-bit mask by 255)")
    if mask.shape != (height, width):
        warnings.warn(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}; resized bilinearly",
            MaskSizeWarning,
            stacklevel=3,
        )
        t = torch.from_numpy(np.ascontiguousarray(mask))[None, None]
        mask = _resize(t, height, width)[0, 0].clamp(0, 1).numpy()
    return mask


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize, antialiased when shrinking (as PIL's, which made the training crops)."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def _predict(model: nn.Module, image_255: torch.Tensor, mask: torch.Tensor, precision: str) -> torch.Tensor:
    """The network's harmonised image (float 0-255, clamped) for a 0-255 input of size multiple of 8."""
    with autocast_context(image_255.device, precision):
        out = model(normalise(image_255), mask)["images"]
    return to_255(out.float())


def _pad_to_8(x: torch.Tensor, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % 8, -w % 8
    if not pad_h and not pad_w:
        return x
    if mode == "zeros":
        return F.pad(x, (0, pad_w, 0, pad_h))
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


@torch.inference_mode()
def harmonize_image(
    model: nn.Module,
    composite_rgb_uint8: np.ndarray,
    mask_float: np.ndarray,
    *,
    size: int = 256,
    full_res: bool = False,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Harmonise one composite: HxWx3 uint8 in, HxWx3 uint8 out (same size).

    `mask_float` is HxW in [0, 1] (uint8 and bool accepted; another size is resized with a
    warning). The network runs at `size` x `size` and its change is upsampled (default), or at the
    full size padded to a multiple of 8 (`full_res`); either way the output is
    composite + mask * change, so pixels with mask 0 are exactly the composite's.
    `device` defaults to the model's; the model's training mode is restored afterwards.
    """
    comp = as_rgb_uint8(composite_rgb_uint8)
    h, w = comp.shape[:2]
    mask_np = as_mask(mask_float, h, w)
    if not full_res and (size < 8 or size % 8):
        raise ValueError(f"size must be a positive multiple of 8, got {size}")
    device = model_device(model) if device is None else torch.device(device)
    comp_t = torch.tensor(comp, device=device).permute(2, 0, 1)[None].float()
    mask_t = torch.tensor(mask_np, device=device)[None, None]
    was_training = model.training
    model.eval()
    try:
        if full_res:
            pred = _predict(model, _pad_to_8(comp_t, "replicate"), _pad_to_8(mask_t, "zeros"), precision)
            change = pred[:, :, :h, :w] - comp_t
        else:
            # The network sees a uint8-valued image, as in training and in "Fixed256" evaluation.
            small = _resize(comp_t, size, size).round().clamp(0, 255)
            small_mask = _resize(mask_t, size, size).clamp(0, 1)
            change = F.interpolate(
                _predict(model, small, small_mask, precision) - small,
                size=(h, w),
                mode="bilinear",
                align_corners=False,
            )
    finally:
        model.train(was_training)
    out = torch.where(mask_t > 0, (comp_t + mask_t * change).round().clamp(0, 255), comp_t)
    return out[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------------- CLI


@dataclasses.dataclass(frozen=True)
class Job:
    image: Path
    mask: Path
    out: Path


def read_composite(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(HxWx3 uint8 RGB, HxW uint8 alpha or None) of an image file: giftnet.pipeline.images, the loaders' decoder."""
    return read_rgb_alpha(path)


def read_mask_file(path: Path) -> np.ndarray:
    """HxW float32 mask in [0, 1]: giftnet.pipeline.images.read_mask, the loaders' mask reader."""
    return read_mask(path)


def write_image(path: Path, rgb: np.ndarray, alpha: np.ndarray | None) -> None:
    """Save RGB (RGBA with the input's alpha when the format keeps it) atomically; JPEG at quality 95."""
    if alpha is not None and path.suffix.lower() in ALPHA_SUFFIXES:
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    else:
        image = Image.fromarray(rgb, "RGB")
    options: dict[str, Any] = {"quality": 95, "subsampling": 0} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    with output_errors(path, "--out"):
        save_image(path, image, **options)


def _images_in(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in found:
                raise InputError(f"{folder}: two images share the stem {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    return found


def plan_jobs(image: Path, mask: Path, out: Path, weights: Path | None = None) -> list[Job]:
    """One job per composite: file mode, or folder mode with masks matched by file stem.

    Refused up front: an output format that cannot be written and any output that is (the same
    file as, hard links and symlinks included) an input.
    """
    for path, flag in ((image, "--image"), (mask, "--mask")):
        if not path.exists():
            raise InputError(f"{path}: {flag} does not exist")
    if not image.is_dir():
        check_regular_file(image, "--image")  # a FIFO or device would block
        if mask.is_dir():
            raise InputError(f"{mask}: --mask must be a file when --image is a file")
        check_regular_file(mask, "--mask")
        with output_errors(out, "--out"):
            output_format(out)
        jobs = [Job(image, mask, out)]
    else:
        jobs = _folder_jobs(image, mask, out)
    guard = InputGuard([*(p for j in jobs for p in (j.image, j.mask)), *([weights] if weights else [])])
    for job in jobs:
        guard.check(job.out, "--out")
    return jobs


def _folder_jobs(image: Path, mask: Path, out: Path) -> list[Job]:
    if not mask.is_dir():
        raise InputError(f"{mask}: --mask must be a folder when --image is a folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out must be a folder when --image is a folder")
    if out.resolve() in (image.resolve(), mask.resolve()):
        raise InputError(f"{out}: --out must not be an input folder (outputs would overwrite inputs)")
    images, masks = _images_in(image), _images_in(mask)
    if not images:
        raise InputError(f"{image}: no images ({', '.join(IMAGE_SUFFIXES)})")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise InputError(f"{mask}: no mask with the stem of {len(missing)} image(s): {first_n(missing, 5, ', ')}")
    return [Job(images[s], masks[s], out / f"{s}.png") for s in images]


SHIPPED_WEIGHTS = "giftnet-realphoto-fp16.safetensors"  # giftnet/data/: see MODEL_CARD.md


def shipped_weights() -> Path:
    """The weights shipped with the package: GiftNet trained on real photos (MODEL_CARD.md)."""
    return Path(__file__).resolve().parent / "data" / SHIPPED_WEIGHTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m giftnet.harmonize", description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, required=True, help="composite image, or a folder of them")
    p.add_argument("--mask", type=Path, required=True, help="foreground mask, or a folder (matched by stem)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="GiftNet weights (.safetensors; default: the shipped model, MODEL_CARD.md)",
    )
    p.add_argument("--out", type=Path, required=True, help="output image, or a folder (writes STEM.png)")
    p.add_argument("--size", type=int, default=256, help="network resolution in the default mode")
    p.add_argument("--full-res", action="store_true", help="run the network at the image size (padded to x8)")
    p.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    return p


def _run(job: Job, model: nn.Module, args: argparse.Namespace, device: torch.device) -> str:
    rgb, alpha = read_composite(job.image)
    mask = read_mask_file(job.mask)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = harmonize_image(
            model, rgb, mask, size=args.size, full_res=args.full_res, device=device, precision=args.precision
        )
    for w in caught:
        if issubclass(w.category, MaskSizeWarning):
            print(f"warning: {job.mask}: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if alpha is not None and job.out.suffix.lower() not in ALPHA_SUFFIXES:
        print(f"warning: {job.out}: this format has no alpha; the input's alpha is dropped", file=sys.stderr)
    write_image(job.out, out, alpha)
    return f"{rgb.shape[1]}x{rgb.shape[0]}"


def main(argv: Sequence[str] | None = None) -> int:
    configure_allocator()
    args = build_parser().parse_args(argv)
    return run_cli("harmonize", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    if args.size < 8 or args.size % 8:
        raise InputError(f"--size must be a positive multiple of 8, got {args.size}")
    weights = args.weights or shipped_weights()  # the shipped model when no --weights
    jobs = plan_jobs(args.image, args.mask, args.out, weights)
    device = check_device(args.device)
    autocast_context(device, args.precision)  # refuse an unsupported precision before loading anything
    model = load_model(weights, device)
    for job in jobs:
        start = time.perf_counter()
        shape = _run(job, model, args, device)
        print(f"{job.out} ({shape}, {time.perf_counter() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
