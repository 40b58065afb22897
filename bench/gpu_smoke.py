"""GPU correctness check without pytest: each Triton kernel against its PyTorch reference on CUDA.

The first step of bench/gpu_check.sh: seconds of plain Python that say whether the kernels are
right on the device before any benchmark or the pytest suite runs (and that run where pytest is
missing). The core of tests/test_*_cuda.py at a few awkward shapes and at the GiftNet shapes
(E1-E4 of a 256x256 batch, batch reduced), in fp32, fp16 and bf16, with the masks, inputs and
tolerances of giftnet.kernels.testing:

- masked_modconv2d (impl="triton"): output and the gradients of x, weight and style for one
  shared upstream gradient, against the reference run in fp64 on the same (cast) inputs;
  atol relative to the reference's magnitude;
- relation_map and relation_distill_loss (impl="triton"): value and student gradient against the
  reference on the same inputs;
- one GiftNet training loss with modconv_impl/relation_impl "triton" against "reference" (fp32).

Prints one line per check and exits 1 if any fails. Without CUDA it says so and exits 0 (the
CPU suite covers the kernels through Triton's interpreter).

    python -m giftnet.bench.gpu_smoke [--quick]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import traceback
from collections.abc import Callable

import torch

from giftnet.kernels.testing import TOLERANCES, assert_close, make_mask, modconv_inputs

MODCONV_TOL = TOLERANCES["modconv", "gpu"]
RELATION_TOL = TOLERANCES["relation", "gpu"]
GAMMA = 0.01
# (batch, channels, height, width, mask, channels_last): awkward shapes, then the GiftNet sites.
AWKWARD = [(1, 3, 5, 7, "full", False), (2, 17, 9, 13, "empty", True), (3, 48, 19, 37, "soft", False)]
GIFTNET = [
    (2, 32, 256, 256, "blob", True),
    (2, 64, 128, 128, "soft", False),
    (2, 128, 64, 64, "blob", True),
    (2, 256, 32, 32, "soft", True),
]


def check_modconv(shape: tuple, dtype: torch.dtype, device: str) -> None:
    """Output and x/weight/style gradients of the Triton op vs the fp64 reference on the same inputs."""
    from giftnet.kernels.masked_modconv import masked_modconv2d, masked_modconv2d_reference

    b, c, h, w, kind, channels_last = shape
    t = modconv_inputs(b, c, h, w, kind, torch.Generator().manual_seed(0))
    x, weight, style, mask, dy = (t[k] for k in ("x", "weight", "style", "mask", "dy"))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, dy = x.contiguous(memory_format=fmt), dy.contiguous(memory_format=fmt)
    x, weight, style, mask, dy = (t.to(device, dtype) for t in (x, weight, style, mask, dy))
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, style)]
    y = masked_modconv2d(leaves[0], leaves[1], leaves[2], mask, impl="triton")
    y.backward(dy)
    ref = [t.detach().double().requires_grad_(True) for t in (x, weight, style)]
    y_ref = masked_modconv2d_reference(ref[0], ref[1], ref[2], mask.double())
    y_ref.backward(dy.double())
    atol, rtol = MODCONV_TOL[dtype]
    for name, g, r in zip(("y", "dx", "dweight", "dstyle"), [y, *_grads(leaves)], [y_ref, *_grads(ref)], strict=True):
        if g.dtype != dtype:
            raise AssertionError(f"{name} is {g.dtype}, expected {dtype}")
        assert_close(name, g, r, atol, rtol)


def _grads(leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """The .grad of each leaf; AssertionError naming the leaf if backward did not reach it."""
    missing = [i for i, t in enumerate(leaves) if t.grad is None]
    if missing:
        raise AssertionError(f"no gradient reached input(s) {missing}")
    return [t.grad for t in leaves if t.grad is not None]


def check_relation(shape: tuple, dtype: torch.dtype, device: str) -> None:
    """Relation map (rows sum to 1, shared upstream gradient) and loss (upstream 3.7) vs the reference."""
    from giftnet.kernels.relation import (
        relation_distill_loss,
        relation_distill_loss_reference,
        relation_map,
        relation_map_reference,
    )

    b, c, h, w, kind, channels_last = shape
    gen = torch.Generator().manual_seed(1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    feat = torch.randn(b, c, h, w, generator=gen).contiguous(memory_format=fmt).to(device, dtype)
    teacher = torch.randn(b, c, h, w, generator=gen).to(device, dtype)
    mask = make_mask(kind, b, h, w, gen).to(device)
    feat.requires_grad_(True)
    atol, rtol = RELATION_TOL[dtype]
    out, ref = relation_map(feat, mask, gamma=GAMMA, impl="triton"), relation_map_reference(feat, mask, gamma=GAMMA)
    assert_close("relation map", out, ref, atol, rtol)
    torch.testing.assert_close(out.detach().float().sum(dim=1), torch.ones(b, device=device), atol=1e-3, rtol=1e-3)
    up = torch.randn(ref.shape, generator=gen).to(device, ref.dtype)
    grads = [torch.autograd.grad(o, feat, up)[0] for o in (out, ref)]
    assert_close("relation map grad", grads[0], grads[1], atol, rtol)
    loss = relation_distill_loss(feat, teacher, mask, gamma=GAMMA, impl="triton")
    loss_ref = relation_distill_loss_reference(feat, teacher, mask, gamma=GAMMA)
    assert_close("relation loss", loss, loss_ref, atol, rtol)
    grads = [torch.autograd.grad(v * 3.7, feat)[0] for v in (loss, loss_ref)]
    if grads[0].dtype != dtype:
        raise AssertionError(f"loss gradient is {grads[0].dtype}, expected {dtype}")
    assert_close("relation loss grad", grads[0], grads[1], atol, rtol)


def check_giftnet_loss(device: str, size: int = 64, base: int = 32) -> None:
    """One GiftNet forward + loss + backward with the Triton ops vs the reference ops (fp32)."""
    from giftnet.config import LossConfig, ModelConfig
    from giftnet.losses import total_loss
    from giftnet.model import build_model, build_teacher

    results = []
    for impl in ("triton", "reference"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(base_channels=base, modconv_impl=impl)).to(device)
        teacher = build_teacher(ModelConfig(base_channels=base)).to(device).eval()
        gen = torch.Generator().manual_seed(2)
        image = torch.randn(2, 3, size, size, generator=gen).to(device)
        real = torch.randn(2, 3, size, size, generator=gen).to(device)
        mask = (torch.rand(2, 1, size, size, generator=gen) > 0.5).float().to(device)
        with torch.no_grad():
            t_feats = teacher(real, mask)
        parts = total_loss(model(image, mask), real, mask, LossConfig(relation_impl=impl), t_feats)
        parts["total"].backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((parts["total"].detach(), grad))
    (loss, grad), (loss_ref, grad_ref) = results
    assert_close("GiftNet loss", loss, loss_ref, 1e-2, 1e-2)
    assert_close("GiftNet parameter gradients", grad, grad_ref, 2e-2, 5e-2)


def cases(quick: bool) -> list[tuple[str, Callable[[], None]]]:
    """(name, check) for every check; quick keeps the awkward shapes and the smallest GiftNet one."""
    out: list[tuple[str, Callable[[], None]]] = []
    shapes = AWKWARD + (GIFTNET[-1:] if quick else GIFTNET)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):  # the training dtype first
        tag = str(dtype).removeprefix("torch.")
        for s in shapes:
            out.append(
                (f"modconv {tag} {s[:4]} {s[4]}{' cl' * s[5]}", functools.partial(check_modconv, s, dtype, "cuda"))
            )
            out.append(
                (f"relation {tag} {s[:4]} {s[4]}{' cl' * s[5]}", functools.partial(check_relation, s, dtype, "cuda"))
            )
    out.append(("GiftNet loss and gradients, triton vs reference, fp32", lambda: check_giftnet_loss("cuda")))
    return out


def run_checks(checks: list[tuple[str, Callable[[], None]]]) -> int:
    """Run every check, print PASS/FAIL lines; return the number of failures."""
    failed = 0
    for name, check in checks:
        start = time.perf_counter()
        try:
            check()
        except Exception as err:
            failed += 1
            print(f"FAIL {name}: {type(err).__name__}: {str(err)[:2000]}", flush=True)
            traceback.print_exc(file=sys.stderr)
            continue
        print(f"PASS {name} ({time.perf_counter() - start:.1f} s)", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m giftnet.bench.gpu_smoke", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the smallest GiftNet shape")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here; nothing to check (the CPU suite runs the kernels in the interpreter)")
        return 0
    print(
        f"gpu_smoke on {torch.cuda.get_device_name()}: torch {torch.__version__}, triton {__import__('triton').__version__}"
    )
    checks = cases(args.quick)
    failed = run_checks(checks)
    print(f"gpu_smoke: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
