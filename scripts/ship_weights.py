"""Write the shipped weights: a trained model's floats as fp16 safetensors, checked against the original.

    python scripts/ship_weights.py RUN/model.safetensors [--out giftnet/data/giftnet-realphoto-fp16.safetensors]

Loading casts the fp16 tensors back to fp32 (giftnet.weights), so the model runs as trained up to
fp16 rounding of its weights; this script refuses to write a file whose outputs on a random
composite differ from the original's by more than 0.5/255, or any tensor that fp16 cannot hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from giftnet.fileio import atomic_write_bytes  # noqa: E402
from giftnet.harmonize import shipped_weights  # noqa: E402
from giftnet.metrics import to_255  # noqa: E402
from giftnet.weights import load_weights  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--out", type=Path, default=shipped_weights())
    args = p.parse_args(argv)
    with safe_open(str(args.weights), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    half = {}
    for name, t in tensors.items():
        if t.is_floating_point():
            h = t.to(torch.float16)
            if not torch.isfinite(h).all():
                raise SystemExit(f"{name}: values beyond fp16's range")
            half[name] = h.contiguous()
        else:
            half[name] = t
    role = meta.setdefault("role", "model")  # files from before roles existed hold a model
    if role != "model":
        raise SystemExit(f"{args.weights}: these are {role} weights; ship a harmonization model")
    meta["stored_precision"] = "fp16"
    data = save(half, metadata=meta)
    tmp = args.out.with_suffix(".check.safetensors")
    atomic_write_bytes(tmp, data)
    try:
        torch.manual_seed(0)
        x = torch.randn(2, 3, 256, 256)  # about the range of ImageNet-normalised images
        m = (torch.rand(2, 1, 256, 256) > 0.6).float()
        with torch.inference_mode():
            a = to_255(load_weights(args.weights).eval()(x, m)["images"])
            b = to_255(load_weights(tmp).eval()(x, m)["images"])
        diff = float((a - b).abs().max())
    finally:
        tmp.unlink()
    if diff > 0.5:
        raise SystemExit(f"fp16 weights change outputs by {diff:.3f}/255: not written")
    atomic_write_bytes(args.out, data)
    print(f"{args.out}: {len(data) / 1e6:.2f} MB, max output change {diff:.4f}/255")
    return 0


if __name__ == "__main__":
    sys.exit(main())
