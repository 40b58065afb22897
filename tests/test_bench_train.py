"""giftnet.bench.train: the five-configuration training-throughput harness at its tiny CPU size."""

from __future__ import annotations

import json

import pytest
import torch

from giftnet.bench import train
from giftnet.bench.common import read_results
from giftnet.pipeline import dali_loader


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One real tiny run (1 timed step per configuration and round): its JSON rows and CSV records."""
    out = tmp_path_factory.mktemp("bench_train")
    code = train.main(["--tiny", "--steps", "1", "--json", str(out / "t.json"), "--csv", str(out / "r.csv")])
    assert code == 0
    return json.loads((out / "t.json").read_text()), read_results(out / "r.csv")


def test_rows_measure_real_steps_and_skip_with_reasons(tiny):
    rows, _ = tiny
    by = {r["config"]: r for r in rows}
    assert list(by) == list("abcde")
    for key in ("a", "b"):
        r = by[key]
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0 and r["steps"] == 2
        assert len(r["round_images_per_s"]) == 2 and all(v > 0 for v in r["round_images_per_s"])
        assert r["loss"] == r["loss"] and r["loss"] > 0  # a finite training loss
    assert by["a"]["vs_a"] == 1.0 and by["a"]["precision"] == "fp32"
    assert by["b"]["vs_a"] == round(by["b"]["images_per_s"] / by["a"]["images_per_s"], 2)
    assert by["b"]["precision"] in ("bf16", "fp16") and by["b"]["channels_last"]
    if not torch.cuda.is_available():
        for key in ("c", "e"):
            assert by[key]["images_per_s"] is None and "needs CUDA" in by[key]["skipped"]
    if dali_loader.DALI_IMPORT_ERROR is None:
        assert by["d"]["images_per_s"] > 0 and by["d"]["backend"] == "dali"
    else:
        assert by["d"]["skipped"].startswith("DALI not importable")
    for r in rows:
        assert r["machine"] and r["git"] and r["date"] and r["cpu"]


def test_flops_are_counted_once_for_every_row(tiny):
    rows, _ = tiny
    ran = [r for r in rows if r.get("images_per_s")]
    gflop = {r["gflop_per_image"] for r in ran}
    assert len(gflop) == 1 and gflop.pop() > 0
    for r in ran:
        assert r["achieved_tflops"] == pytest.approx(r["images_per_s"] * r["gflop_per_image"] / 1e3, rel=1e-2)
        if not torch.cuda.is_available():
            assert r["mfu"] is None and r["peak_mem_mb"] is None  # no peak for a CPU; memory is CUDA-only


def test_csv_records_figures_and_skip_reasons(tiny):
    rows, records = tiny
    assert {r["benchmark"] for r in records} == {"train"}
    a = {r["metric"]: float(r["value"]) for r in records if r["config"].startswith("a ") and r["value"]}
    assert a["images_per_s"] == pytest.approx(rows[0]["images_per_s"], rel=1e-4) and a["vs_a"] == 1.0
    skipped = [r for r in records if r["metric"] == "skipped"]
    assert all(r["note"] for r in skipped)
    assert len(skipped) == sum(1 for r in rows if r.get("skipped"))


def test_a_failing_configuration_is_reported_and_the_others_run(monkeypatch, tmp_path):
    real = train.Setup.segment

    def segment(self, epoch, warmup):
        if self.key == "b":
            raise RuntimeError("simulated kernel failure")
        return real(self, epoch, warmup)

    monkeypatch.setattr(train.Setup, "segment", segment)
    rows = train.run(True, steps=1, rounds=1, configs="ab", cache=tmp_path)
    assert rows[0]["images_per_s"] > 0
    assert rows[1]["images_per_s"] is None and "simulated kernel failure" in rows[1]["error"]


def test_configuration_choice_and_skip_rules(monkeypatch, capsys):
    assert train.main(["--tiny", "--configs", "bc"]) == 2
    assert "include the baseline a" in capsys.readouterr().err
    cuda = torch.device("cuda")
    assert train.skip_reason("c", cuda, "bf16") is None and train.skip_reason("e", cuda, "bf16") is None
    assert "mixed precision" in train.skip_reason("b", torch.device("cpu"), None)
    monkeypatch.setattr(dali_loader, "DALI_IMPORT_ERROR", "No module named 'nvidia.dali'")
    assert train.skip_reason("d", cuda, "bf16").startswith("DALI not importable")
    assert train.skip_reason("e", cuda, "bf16") is None  # e then runs on the DataLoader and says so
