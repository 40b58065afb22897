"""giftnet.bench.kernels_relation: the harness runs at its tiny size and reports what it could not time."""

import json

import torch

from giftnet.bench import kernels_relation as bench


def test_tiny_benchmark_rows(tmp_path):
    out = tmp_path / "relation.json"
    assert bench.main(["--tiny", "--json", str(out), "--reps", "1"]) == 0
    rows = json.loads(out.read_text())
    assert [r["level"] for r in rows[::3]] == ["E1", "E2", "E3", "E4"]
    assert [r["impl"] for r in rows[:3]] == ["eager", "compile", "triton"]
    for r in rows:
        assert r["machine"] and r["git"] and r["date"]
        assert r["roofline_bytes"] == bench.roofline_bytes(
            r["batch"], r["channels"], r["side"], getattr(torch, r["dtype"])
        )
        if r["ms"] is None:
            assert "needs CUDA" in r["skipped"] and not torch.cuda.is_available()
        else:
            assert r["ms"] > 0 and r["gbps"] >= 0 and r["loss"] > 0
    eager = [r for r in rows if r["impl"] == "eager"]
    assert all(r["vs_eager"] == 1.0 for r in eager)


def test_peak_bandwidth_by_gpu_name():
    from giftnet.bench.common import peaks

    assert peaks("NVIDIA GeForce RTX 3090")["gbps"] == 936.0
    assert peaks("NVIDIA H200")["gbps"] == 4300.0
    assert peaks("Some Other GPU") is None
    # 16 x 32 x 256^2 bf16 student and teacher, fp32 mask, bf16 gradient
    assert bench.roofline_bytes(16, 32, 256, torch.bfloat16) == 3 * 16 * 32 * 65536 * 2 + 16 * 65536 * 4
