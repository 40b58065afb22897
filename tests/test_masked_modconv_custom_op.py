"""Both kernel ops as torch custom ops: opcheck, and torch.compile without graph breaks (CPU, tiny shapes).

On the CPU the Triton kernels run under the interpreter (conftest sets TRITON_INTERPRET=1), so
this checks the registration (schema, fake implementations, autograd) that a GPU compile of the
whole model relies on; `fullgraph=True` fails on any graph break. The "aot_eager" backend traces
forward and backward through the fake implementations without a C++ compiler, which keeps this
fast.
"""

from __future__ import annotations

import pytest
import torch

from giftnet import kernels
from giftnet.kernels._dispatch import interpreter_enabled
from giftnet.kernels.testing import make_mask, modconv_inputs

needs_interpreter = pytest.mark.skipif(
    torch.cuda.is_available() or not interpreter_enabled(), reason="CPU check through Triton's interpreter"
)


@needs_interpreter
@pytest.mark.parametrize("demodulate", [True, False])
def test_opcheck_masked_modconv(demodulate):
    from giftnet.kernels.masked_modconv.autograd import _backward_op, _forward_op

    t = modconv_inputs(2, 16, 4, 5, "blob", torch.Generator().manual_seed(0))
    x, w, s = (t[k].requires_grad_(True) for k in ("x", "weight", "style"))
    torch.library.opcheck(_forward_op, (x, w, s, t["mask"], demodulate, 1e-8))
    d = _forward_op(x, w, s, t["mask"], demodulate, 1e-8)[1]
    torch.library.opcheck(_backward_op, (t["dy"], x.detach(), w.detach(), s.detach(), t["mask"], d, demodulate))


@needs_interpreter
def test_backward_reuses_the_forward_demodulation(monkeypatch):
    """The demodulation is computed once, in the forward, and saved: the backward does not recompute it."""
    from giftnet.kernels.masked_modconv import autograd

    calls = []
    real = autograd.demodulation_coefficients
    monkeypatch.setattr(autograd, "demodulation_coefficients", lambda *a: calls.append(1) or real(*a))
    t = modconv_inputs(1, 17, 5, 7, "blob", torch.Generator().manual_seed(3))
    x, w, s = (t[k].requires_grad_(True) for k in ("x", "weight", "style"))
    y = kernels.masked_modconv2d(x, w, s, t["mask"], impl="triton")
    assert len(calls) == 1
    grads = torch.autograd.grad(y, (x, w, s), t["dy"])
    assert len(calls) == 1
    ref = kernels.masked_modconv2d(x, w, s, t["mask"], impl="reference")
    for got, want in zip(grads, torch.autograd.grad(ref, (x, w, s), t["dy"]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_interpreter
def test_opcheck_relation_loss():
    from giftnet.kernels.relation.autograd import _loss_op

    gen = torch.Generator().manual_seed(1)
    student = torch.randn(2, 16, 4, 5, generator=gen).requires_grad_(True)
    teacher = torch.randn(2, 16, 4, 5, generator=gen)
    mask = make_mask("blob", 2, 4, 5, gen)
    torch.library.opcheck(_loss_op, (student, teacher, mask, 0.01, True))
    # Without need_grad the op returns no backward terms: check its schema and fake only.
    torch.library.opcheck(
        _loss_op, (student, teacher, mask, 0.01, False), test_utils=("test_schema", "test_faketensor")
    )


class TinyHarmonizer(torch.nn.Module):
    """A conv, the masked modulated conv and the relation loss: the pattern of a GIFT site."""

    def __init__(self, c: int, impl: str) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c, 3, padding=1)
        self.weight = torch.nn.Parameter(torch.randn(c, c, 3, 3) / (3.0 * c**0.5))
        self.style = torch.nn.Linear(c, c)
        self.impl = impl

    def forward(self, x, mask, teacher):
        h = self.conv(x)
        s = self.style(h.mean(dim=(2, 3))) + 1.0
        y = kernels.masked_modconv2d(h, self.weight, s, mask, impl=self.impl)
        return kernels.relation_distill_loss(y, teacher, mask, impl=self.impl) + y.square().mean()


def _loss_and_grads(model, x, mask, teacher):
    loss = model(x, mask, teacher)
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    return loss.detach(), grads


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_interpreter), "reference"])
def test_compiled_model_has_no_graph_break_and_gives_the_eager_result(impl):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(2)
    model = TinyHarmonizer(16, impl)
    x = torch.randn(2, 16, 6, 5, generator=gen).requires_grad_(True)
    mask, teacher = make_mask("blob", 2, 6, 5, gen), torch.randn(2, 16, 6, 5, generator=gen)
    want = _loss_and_grads(model, x, mask, teacher)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fails on a graph break
    got = _loss_and_grads(compiled, x, mask, teacher)
    torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-5)
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)
