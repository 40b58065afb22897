"""bench.data: the DALI-vs-DataLoader harness runs at its tiny size and reports both backends."""

import json

from bench import data
from pipeline import dali_loader


def test_tiny_benchmark_reports_both_backends(tmp_path):
    out = tmp_path / "data.json"
    assert data.main(["--tiny", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["torch", "dali"]
    torch_row, dali_row = rows
    assert torch_row["pairs_per_s"] > 0 and torch_row["vs_torch"] == 1.0
    assert len(torch_row["epoch_pairs_per_s"]) == torch_row["epochs"]
    assert torch_row["workers"] == dali_row["workers"]
    for row in rows:
        assert row["git"] and row["date"] and row["cpu"] and row["gpu"]
    if dali_loader.DALI_IMPORT_ERROR is None:
        assert dali_row["pairs_per_s"] > 0
        assert dali_row["vs_torch"] == round(dali_row["pairs_per_s"] / torch_row["pairs_per_s"], 2)
        assert dali_row["decode"].startswith("DALI")
    else:
        assert "DALI" in dali_row["skipped"] and dali_row["pairs_per_s"] is None


def test_without_dali_the_row_is_skipped_not_failed(monkeypatch):
    monkeypatch.setattr(dali_loader, "DALI_IMPORT_ERROR", "No module named 'nvidia.dali'")
    rows = data.run(tiny=True, pairs=8)
    assert rows[1]["skipped"].startswith("DALI not importable") and rows[1]["vs_torch"] is None
    assert rows[0]["pairs_per_s"] > 0 and rows[0]["pairs"] == 8
