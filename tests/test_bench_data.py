"""giftnet.bench.data: the feeder / DALI / DataLoader harness runs at its tiny size and reports every figure."""

import json
import os

import numpy as np
import torch

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
    for row in (torch_row, *([dali_row] if dali_loader.DALI_IMPORT_ERROR is None else [])):
        assert row["start_s"] > 0 and row["start_cpu_s"] >= 0 and row["epoch_pairs_per_s"] > 0
        assert row["epoch_cpu_s_per_pair"] > 0 and row["malloc"]
        # the whole epoch is the start-up plus the steady state: its rate lies below the steady rate's
        # share of it, and its CPU per pair between the start-up's and the steady state's
        # (start_s is rounded to the millisecond, which is a few percent of a tiny epoch)
        steady_pairs = row["pairs"] - 4
        steady_s = steady_pairs / row["pairs_per_s"]
        fastest, slowest = (row["pairs"] / (max(0.0, row["start_s"] + d) + steady_s) for d in (-5e-4, 5e-4))
        assert 0.98 * slowest - 0.2 <= row["epoch_pairs_per_s"] <= 1.02 * fastest + 0.2
    assert torch_row["epoch_vs_torch"] == 1.0
    assert {r["cores_used"] for r in rows} == {1}
    for row in rows:
        assert row["git"] and row["date"] and row["cpu"] and row["gpu"] and "load_avg_1min" in row
    if dali_loader.DALI_IMPORT_ERROR is None:
        assert dali_row["pairs_per_s"] > 0
        assert dali_row["vs_torch"] == round(dali_row["pairs_per_s"] / torch_row["pairs_per_s"], 2)
        assert (
            dali_row["decode"] == "DALI CPU window decode, resize in torch, feeder inline"
        )  # the CPU decodes: no feeder process
        assert dali_row["epoch_vs_torch"] == round(dali_row["epoch_pairs_per_s"] / torch_row["epoch_pairs_per_s"], 2)
    else:
        assert "DALI" in dali_row["skipped"] and dali_row["pairs_per_s"] is None
    text = note.read_text()
    assert "| feeder |" in text and rows[0]["git"] in text and "load" in text and "first batch s" in text


def test_without_dali_the_row_is_skipped_not_failed(monkeypatch):
    monkeypatch.setattr(dali_loader, "DALI_IMPORT_ERROR", "No module named 'nvidia.dali'")
    rows = data.run(tiny=True, pairs=8)
    assert rows[3]["skipped"].startswith("DALI not importable") and rows[3]["vs_torch"] is None
    assert rows[2]["pairs_per_s"] > 0 and rows[2]["pairs"] == 8
    assert "skipped" in data.markdown(rows)


def test_backends_can_be_chosen_and_a_row_without_torch_has_no_ratio():
    rows = data.run(tiny=True, pairs=8, backends=("feeder", "dali"))
    assert [r["backend"] for r in rows] == ["feeder", "dali"]
    assert all(r["vs_torch"] is None and r["epoch_vs_torch"] is None for r in rows)


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


def test_tree_cpu_counts_a_live_child_and_a_reaped_one_once():
    import subprocess
    import sys
    import time

    from giftnet.bench.proc_cpu import live_descendants_cpu, tree_cpu_seconds

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)"
    before = tree_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        deadline = time.monotonic() + 60
        while live_descendants_cpu() < 0.35 and time.monotonic() < deadline:  # the child burns, then sleeps
            time.sleep(0.05)
        live = live_descendants_cpu()
        assert live >= 0.35
        during = tree_cpu_seconds()
        assert during - before >= 0.35  # counted while it lives (getrusage alone would not see it)
    finally:
        child.kill()
        child.wait()
    after = tree_cpu_seconds()
    assert live_descendants_cpu() == 0.0
    assert 0.35 <= after - before < live + 0.5  # reaped: counted once, not live and reaped both


def test_dali_feeds_inline_when_the_cpu_decodes_and_from_a_process_when_the_gpu_does():
    import torch

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert dali_loader.default_feed_processes(cpu, 1) == dali_loader.default_feed_processes(cpu, 8) == 0
    assert dali_loader.default_feed_processes(gpu, 1) == 0 and dali_loader.default_feed_processes(gpu, 2) == 1


def test_pinned_gives_torch_as_many_threads_as_cores_and_restores_both():
    threads, allowed = torch.get_num_threads(), os.sched_getaffinity(0)
    with data.pinned(1):
        assert torch.get_num_threads() == 1
        assert len(os.sched_getaffinity(0)) == 1
    assert torch.get_num_threads() == threads and os.sched_getaffinity(0) == allowed
