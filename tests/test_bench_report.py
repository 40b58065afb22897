"""giftnet.bench.report, giftnet.bench.kernels (the wrapper), giftnet.bench.gpu_smoke and bench/gpu_check.sh on a CPU machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from giftnet.bench import common, gpu_smoke, kernels, report

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.sh"
# Sample records, made up for the test: a CPU smoke run and a GPU run (labelled SAMPLE).
CPU, GPU = "Test CPU (CPU only)", "NVIDIA H200 SAMPLE"


def _sample_csv(path: Path, with_gpu: bool = True) -> Path:
    recs = []

    def add(machine, bench, config, **figures):
        for metric, value in figures.items():
            skipped = metric in ("skipped", "error")
            recs.append(
                {
                    "machine": machine,
                    "git": "abc1234",
                    "date": "2026-01-01 00:00 UTC",
                    "benchmark": bench,
                    "config": config,
                    "metric": metric,
                    "value": "" if skipped else value,
                    "note": value if skipped else "",
                }
            )

    add(CPU, "train", "a b2 32px c8", images_per_s=2.0, vs_a=1.0, ms_per_step=1000.0, gflop_per_image=0.14)
    add(CPU, "train", "c b2 32px c8", skipped="needs CUDA: the Triton kernels run on GPUs only")
    if with_gpu:
        for key, ips in zip("abcde", (100.0, 170.0, 240.0, 260.0, 300.0), strict=True):
            add(GPU, "train", f"{key} b16 256px c32", images_per_s=ips, vs_a=ips / 100, mfu=ips * 3e-5)
        for impl, ms in (("eager", 2.0), ("triton", 0.9)):
            add(GPU, "kernels_modconv", f"E1 {impl} fwd+bwd bfloat16", ms=ms, tflops=30 / ms, gbps=300 / ms)
            add(GPU, "kernels_relation", f"E1 {impl} fwd+bwd bfloat16", ms=ms / 4, gbps=1200 / ms)
        add(GPU, "data", "torch b16 256px", pairs_per_s=500.0, vs_torch=1.0)
        add(GPU, "data", "dali b16 256px", pairs_per_s=900.0, vs_torch=1.8)
    return common.append_results(recs, path)


def _aot_sample(path: Path) -> Path:
    base = {"arch": 86, "stack": 0, "local": 0, "shared": 1024, "hot": True, "num_warps": 4, "num_stages": 2}
    records = [
        {**base, "name": "fits", "registers": 96, "spills": False, "ok": True, "constexprs": {"BLOCK_C": 32}},
        {**base, "name": "spills", "registers": 255, "stack": 64, "spills": True, "ok": False, "constexprs": {}},
        {**base, "name": "fits", "arch": 90, "registers": 90, "spills": False, "ok": True, "constexprs": {}},
    ]
    path.write_text(json.dumps(records))
    return path


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_tables_plots_and_resources(tmp_path):
    csv = _sample_csv(tmp_path / "results.csv")
    assert report.main(["--results", str(csv), "--aot-json", str(_aot_sample(tmp_path / "aot.json"))]) == 0
    text = (tmp_path / "README.md").read_text()
    assert _is_png(tmp_path / "train_throughput.png") and _is_png(tmp_path / "kernels_roofline.png")
    assert "| c | b + Triton kernels | 240.0 | 2.40 |" in text  # the GPU row with its ratio to a
    assert "skipped: needs CUDA" in text
    assert "Goal (issue 7): d/a = 2.60 (>= 2), c/b = 1.41 (>= 1.3)." in text
    assert f"Points measured on **{GPU}**" in text and "RTX 3090 roof is drawn from its specification" in text
    assert "DALI delivers 3.46x the engine's training rate" in text  # 900 pairs/s over d's 260 images/s
    assert "| spills | 4 | 2 |  | 255 | 64/0 | 1024 | **NO** |" in text  # a spilling kernel stands out
    assert "| fits | 4 | 2 | BLOCK_C=32 | 96 |" in text and text.count("| fits |") == 1  # sm_86 only
    assert "No GPU figures yet" not in text and "bash bench/gpu_check.sh" in text


def test_report_without_gpu_results_says_so(tmp_path):
    csv = _sample_csv(tmp_path / "results.csv", with_gpu=False)
    readme = report.write_report(csv, tmp_path / "out", tmp_path / "missing.json")
    text = readme.read_text()
    assert "No GPU figures yet" in text and "No GPU kernel measurements" in text
    assert "run `python -m giftnet.bench.report --aot`" in text
    assert _is_png(tmp_path / "out" / "kernels_roofline.png")  # the RTX 3090 roof alone


def test_add_json_appends_a_benchmark_and_rejects_other_csvs(tmp_path):
    rows = [
        {"backend": "torch", "batch_size": 4, "crop_size": 32, "pairs_per_s": 50.0, "vs_torch": 1.0, "gpu": "none"},
        {"backend": "dali", "batch_size": 4, "crop_size": 32, "skipped": "DALI not importable: x", "cpu": "C"},
    ]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    csv = tmp_path / "r.csv"
    assert report.main(["--results", str(csv), "--add", f"data={tmp_path / 'd.json'}"]) == 0
    recs = common.read_results(csv)
    assert [(r["config"], r["metric"]) for r in recs] == [
        ("torch b4 32px", "pairs_per_s"),
        ("torch b4 32px", "vs_torch"),
        ("dali b4 32px", "skipped"),
    ]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert report.main(["--results", str(tmp_path / "bad.csv")]) == 1


def test_kernels_wrapper_reports_a_failing_benchmark_and_runs_the_other(monkeypatch):
    import giftnet.bench.kernels_relation as rel

    fake = [{"level": "E1", "impl": "eager", "ms": 1.0, "gbps": 2.0, "vs_eager": 1.0, "device": "X (no CUDA)"}]
    monkeypatch.setattr(rel, "run", lambda tiny, on_row: on_row([dict(r) for r in fake]))
    monkeypatch.setitem(kernels.BENCHES, "modconv", "giftnet.bench.no_such_module")
    rows = kernels.run(True)
    assert rows[0]["bench"] == "modconv" and "no_such_module" in rows[0]["error"]
    assert rows[1]["bench"] == "relation" and rows[1]["where"] == "E1" and rows[1]["machine"] == "X (CPU only)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path of the GPU smoke runner")
def test_gpu_smoke_checks_pass_and_catch_a_wrong_reference(monkeypatch):
    import giftnet.kernels.masked_modconv as mm

    shape = gpu_smoke.AWKWARD[0]  # 1x3x5x7, full mask
    checks = [
        ("modconv", lambda: gpu_smoke.check_modconv(shape, torch.float32, "cpu")),
        ("relation", lambda: gpu_smoke.check_relation(shape, torch.float32, "cpu")),
    ]
    assert gpu_smoke.run_checks(checks) == 0
    real = mm.masked_modconv2d_reference
    monkeypatch.setattr(mm, "masked_modconv2d_reference", lambda *a, **k: real(*a, **k) + 0.05)
    assert gpu_smoke.run_checks(checks[:1]) == 1
    assert gpu_smoke.main([]) == 0  # without CUDA: says so, nothing fails
