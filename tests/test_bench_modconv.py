"""Smoke test of the masked modulated convolution benchmark harness at its tiny size."""

from __future__ import annotations

import json

import torch

from giftnet.bench import kernels_modconv


def test_tiny_run_writes_every_site_impl_and_mode(tmp_path, capsys):
    out = tmp_path / "modconv.json"
    assert kernels_modconv.main(["--tiny", "--reps", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "Masked modulated conv" in printed

    impls = {"grouped", "eager", "eager-cl", "compile", "triton", "triton-cl"}
    keys = {(r["site"], r["impl"], r["mode"]) for r in rows}
    assert keys == {(s, i, m) for s in kernels_modconv.SITES for i in impls for m in kernels_modconv.MODES}
    for r in rows:
        assert r["git"] and r["date"] and r["machine"]
        if torch.cuda.is_available() or r["impl"] in kernels_modconv.EAGER_FORMULATIONS:
            assert r["ms"] > 0 and r["tflops"] > 0 and r["gbps"] > 0
            assert r["max_abs_diff_vs_grouped"] < 1e-3  # every formulation computes the same y
            assert r["vs_best_eager"] <= 1.0 or r["impl"] not in kernels_modconv.EAGER_FORMULATIONS
        else:
            assert r["ms"] is None and "needs CUDA" in r["skipped"]


def test_grouped_formulation_matches_the_reference_gradients():
    from giftnet.kernels.masked_modconv import masked_modconv2d_reference

    x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    weight = torch.randn(5, 5, 3, 3, dtype=torch.float64)
    style = torch.rand(2, 5, dtype=torch.float64) + 0.5
    mask = torch.rand(2, 1, 6, 7, dtype=torch.float64)
    dy = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    grads = []
    for fn in (kernels_modconv.masked_modconv2d_grouped, masked_modconv2d_reference):
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, style)]
        y = fn(*leaves, mask)
        grads.append([y, *torch.autograd.grad(y, leaves, dy)])
    for a, b in zip(*grads, strict=True):  # both compute the coefficients in fp32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
