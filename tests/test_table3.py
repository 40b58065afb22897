"""scripts/table3.py at a tiny size: rows trained by the recipe, reused weights, the table, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from data_helpers import tiny_recipe, write_object_photos

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "scripts" / "table3.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def test_table3_trains_rows_reuses_weights_and_resumes(tmp_path):
    photos, out, config = write_object_photos(tmp_path / "photos"), tmp_path / "t3", tiny_recipe(tmp_path / "r.json")
    table = tmp_path / "table3.md"
    base = ["--photos", str(photos), "--out", str(out), "--config", str(config), "--markdown", str(table)]
    first = _run(*base, "--rows", "1", "2", "--seeds", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    row1 = json.loads((out / "row1-seed0" / "metrics.json").read_text())
    row2 = json.loads((out / "row2-seed0" / "metrics.json").read_text())
    assert row1["source"] == row2["source"] == "trained here"
    assert row1["composite"] == row2["composite"]  # the same validation composites for every row
    assert row1["model"]["all"]["fmse"] != row2["model"]["all"]["fmse"]  # two different models
    text = table.read_text()
    assert "| 1 | iSSAM backbone" in text and "| 2 | GIFT at D3" in text and "## Ordering" in text
    # the mean fMSE in the table is the run's own figure
    assert f"{row1['model']['all']['fmse']:.2f}" in text.split("| 1 | ")[1].splitlines()[0]

    # finished runs are not run again; --reuse scores given weights as a row and says so
    before = (out / "row1-seed0" / "metrics.json").stat().st_mtime_ns
    weights = out / "row2-seed0" / "run" / "model.safetensors"
    again = _run(*base, "--rows", "1", "2", "8", "--seeds", "0", "--reuse", "8", "0", str(weights))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "row1-seed0" / "metrics.json").stat().st_mtime_ns == before
    row8 = json.loads((out / "row8-seed0" / "metrics.json").read_text())
    assert row8["model"] == row2["model"] and row8["source"] == "reused: model.safetensors"
    assert not (out / "row8-seed0" / "run").exists()
    text = table.read_text()
    assert "Row 8 seed 0: reused" in text and "row 8" in text.split("## Ordering")[1]


def test_table3_refuses_bad_arguments(tmp_path):
    photos = write_object_photos(tmp_path / "photos", n=2)
    for args, needle in (
        (["--photos", str(tmp_path / "nope")], "--photos"),
        (["--photos", str(photos), "--rows", "11"], "--ablation"),
        (["--photos", str(photos), "--reuse", "8", "x", "w.safetensors"], "--reuse"),
    ):
        result = _run(*args, "--out", str(tmp_path / "out"))
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
