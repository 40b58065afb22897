"""Evaluation protocols: the size composite, real image and mask are scored at.

The papers compare under the protocols of iSSAM's `--resize-strategy`:

- "fixed" (iSSAM's "Fixed256" at size 256, the paper's Table 1): every image resized to
  size x size;
- "longest1024" (iSSAM's "LimitLongest1024"): an image whose longest side exceeds 1024 px is
  resized so that side is 1024, others are kept;
- "full" (iSSAM's "None", PCT-Net's evaluation): the original resolution.

Images are resized as iSSAM does, with OpenCV's fixed-point INTER_LINEAR on uint8
(giftnet.pipeline.resize reproduces it exactly); the mask, a float, bilinearly. For "longest1024" and
"full" the network's input is padded with zeros to a multiple of 8 and its output cropped back,
as iSSAM's predictor does (PadToDivisor), so metrics are taken at the image's own size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from giftnet.pipeline.augment import check_same_size, read_mask
from giftnet.pipeline.images import read_rgb
from giftnet.pipeline.loaders import check_files, make_eval_loader
from giftnet.pipeline.pairs import Pair
from giftnet.pipeline.resize import cv2_linear_resize_u8
from giftnet.pipeline.torch_loader import normalise

PROTOCOLS = ("fixed", "longest1024", "full")
LONGEST = 1024


@dataclass(frozen=True)
class Protocol:
    """A protocol name with its size (used by "fixed" only)."""

    name: str = "fixed"
    size: int = 256

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.name!r}")

    @property
    def label(self) -> str:
        """The name iSSAM's `--resize-strategy` gives it: FixedN, LimitLongest1024, or full resolution."""
        if self.name == "fixed":
            return f"Fixed{self.size}"
        if self.name == "longest1024":
            return f"LimitLongest{LONGEST}"
        return "full resolution"

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) a pair of this size is scored at."""
        if self.name == "fixed":
            return self.size, self.size
        longest = max(height, width)
        if self.name == "longest1024" and longest > LONGEST:
            # albumentations' LongestMaxSize, which iSSAM uses: the other side rounded.
            scale = LONGEST / longest
            return max(1, round(height * scale)), max(1, round(width * scale))
        return height, width


def settings(protocol: Protocol, psnr_peak: str, fssim_range: str) -> dict[str, str]:
    """What the JSON and the table say about how the numbers were computed."""
    return {
        "protocol": protocol.label,
        "resize": "OpenCV INTER_LINEAR (uint8 fixed point) for images, bilinear for the mask",
        "psnr_peak": "per-image max of the real image (iSSAM)" if psnr_peak == "max" else "255 (PCT-Net)",
        "fssim_range": "prediction max - min (CDTNet)" if fssim_range == "pred" else "255",
    }


def resize_pair(
    comp: np.ndarray, real: np.ndarray, mask_255: np.ndarray, height: int, width: int
) -> dict[str, torch.Tensor]:
    """uint8 HxWx3 images and an HxW 0-255 float mask at (height, width), as CHW tensors."""
    resized = [cv2_linear_resize_u8(a, height, width) for a in (comp, real)]
    images = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in resized]
    if mask_255.shape == (height, width):
        mask = torch.from_numpy(np.ascontiguousarray(mask_255, dtype=np.float32))[None]
    else:
        x = torch.from_numpy(np.ascontiguousarray(mask_255, dtype=np.float32))[None, None]
        mask = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0]
    return {"composite": images[0], "real": images[1], "mask": (mask / 255.0).clamp_(0.0, 1.0)}


class ProtocolSet(Dataset):
    """Pair `index` at its protocol size: uint8 images, soft float mask (one pair per item)."""

    def __init__(self, pairs: Sequence[Pair], protocol: Protocol) -> None:
        self.pairs, self.protocol = list(pairs), protocol

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = self.pairs[index]
        mask = read_mask(pair.mask)
        comp, real = read_rgb(pair.composite), read_rgb(pair.real)
        check_same_size((pair.composite, pair.mask, pair.real), (comp.shape[:2], mask.shape, real.shape[:2]))
        height, width = self.protocol.target_size(*comp.shape[:2])
        return resize_pair(comp, real, mask, height, width) | {"index": torch.tensor(index)}


def protocol_loader(
    pairs: Sequence[Pair],
    protocol: Protocol,
    *,
    batch_size: int,
    device: torch.device,
    backend: str,
    num_workers: int,
) -> Iterable[dict[str, torch.Tensor]]:
    """Evaluation batches with make_eval_loader's keys; "fixed" is make_eval_loader itself.

    The other protocols give one pair per batch (sizes differ), read by the PyTorch backend.
    """
    if protocol.name == "fixed":
        return make_eval_loader(
            pairs, batch_size=batch_size, size=protocol.size, device=device, backend=backend, num_workers=num_workers
        )
    check_files(pairs)
    return _single(DataLoader(ProtocolSet(pairs, protocol), batch_size=1, num_workers=num_workers), device)


def _single(loader: DataLoader, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    for batch in loader:
        comp = batch["composite"].to(device)
        yield {
            "composite": normalise(comp),
            "mask": batch["mask"].to(device),
            "composite_255": comp.float(),
            "real_255": batch["real"].to(device).float(),
            "index": batch["index"].to(device),
        }


def pad_to_multiple(x: torch.Tensor, divisor: int = 8) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom and right to multiples of `divisor` (the network pools 3x)."""
    pad_h, pad_w = -x.shape[-2] % divisor, -x.shape[-1] % divisor
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def at_original_size(pred_255: torch.Tensor, composite_255: torch.Tensor, pair: Pair) -> np.ndarray:
    """The harmonised image at the composite file's own size, HxWx3 uint8, blended as harmonize does.

    The network's change (prediction - composite, at the evaluation size) is resized bilinearly
    to the original size and added inside the original mask: pixels outside it are the
    composite's own.
    """
    comp = torch.from_numpy(read_rgb(pair.composite)).permute(2, 0, 1)[None].float()
    mask = torch.from_numpy(read_mask(pair.mask) / 255.0)[None, None].float()
    change = (pred_255 - composite_255)[None].float().cpu()
    height, width = comp.shape[-2:]
    if tuple(change.shape[-2:]) != (height, width):
        change = F.interpolate(change, size=(height, width), mode="bilinear", align_corners=False)
    out = torch.where(mask > 0, (comp + mask * change).round().clamp(0, 255), comp)
    return out[0].permute(1, 2, 0).to(torch.uint8).numpy()
