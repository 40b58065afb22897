"""giftnet.bench.data: the feeder / DALI / DataLoader harness runs at its tiny size and reports every figure."""

import json

import numpy as np

from giftnet.bench import data
from giftnet.pipeline import dali_loader


def test_tiny_benchmark_reports_feeder_torch_and_dali(tmp_path):
    out, note = tmp_path / "data.json", tmp_path / "data.md"
    assert data.main(["--tiny", "--json", str(out), "--markdown", str(note)]) == 0
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["feeder", "feeder_pil", "torch", "dali"]
    feeder, old_feeder, torch_row, dali_row = rows
    assert old_feeder["masks_decoded"] == 1.0 and old_feeder["pairs_per_s_per_process"] > 0
    assert feeder["pairs_per_s_per_process"] > 0 and feeder["cpu_s_per_pair"] > 0
    assert 0 <= feeder["masks_decoded"] <= 1
    assert torch_row["pairs_per_s"] > 0 and torch_row["vs_torch"] == 1.0 and torch_row["cpu_s_per_pair"] > 0
    assert {r["cores_used"] for r in rows} == {1}
    for row in rows:
        assert row["git"] and row["date"] and row["cpu"] and row["gpu"] and "load_avg_1min" in row
    if dali_loader.DALI_IMPORT_ERROR is None:
        assert dali_row["pairs_per_s"] > 0
        assert dali_row["vs_torch"] == round(dali_row["pairs_per_s"] / torch_row["pairs_per_s"], 2)
        assert dali_row["decode"].startswith("DALI")
    else:
        assert "DALI" in dali_row["skipped"] and dali_row["pairs_per_s"] is None
    text = note.read_text()
    assert "| feeder |" in text and rows[0]["git"] in text and "load" in text


def test_without_dali_the_row_is_skipped_not_failed(monkeypatch):
    monkeypatch.setattr(dali_loader, "DALI_IMPORT_ERROR", "No module named 'nvidia.dali'")
    rows = data.run(tiny=True, pairs=8)
    assert rows[3]["skipped"].startswith("DALI not importable") and rows[3]["vs_torch"] is None
    assert rows[2]["pairs_per_s"] > 0 and rows[2]["pairs"] == 8
    assert "skipped" in data.markdown(rows)


def test_photos_are_resized_to_the_long_side(tmp_path):
    from PIL import Image

    from giftnet.bench.data_sets import from_photos

    (tmp_path / "p" / "images").mkdir(parents=True)
    (tmp_path / "p" / "masks").mkdir()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(tmp_path / "p" / "images" / "a.jpg")
    m = Image.new("L", (64, 48))
    m.paste(255, (10, 10, 30, 30))
    m.save(tmp_path / "p" / "masks" / "a.png")
    pairs = from_photos(tmp_path / "p", tmp_path / "out", 2, long_side=160)
    assert len(pairs) == 2
    with Image.open(pairs[1].real) as real, Image.open(pairs[1].mask) as mask:
        assert real.size == mask.size == (160, 120)
        assert set(np.unique(np.asarray(mask)).tolist()) == {0, 255}
