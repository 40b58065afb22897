"""The real-photo recipe end to end at a tiny size: photos with masks -> composites -> train -> per-kind metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from data_helpers import tiny_recipe, write_object_photos

ROOT = Path(__file__).resolve().parent.parent


def _run(photos: Path, out: Path, config: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "scripts" / "realphoto.py"), "--photos", str(photos), "--out", str(out)]
    return subprocess.run([*cmd, "--config", str(config)], env=env, capture_output=True, text=True, timeout=600)


def test_recipe_builds_trains_scores_and_resumes(tmp_path):
    photos, out, config = (
        write_object_photos(tmp_path / "photos"),
        tmp_path / "recipe",
        tiny_recipe(tmp_path / "recipe.json"),
    )
    first = _run(photos, out, config)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    kinds = set(metrics["composite"]) - {"all"}
    assert kinds and kinds <= {"iHarmony4-style", "ccHarmony-style"}
    assert metrics["model"]["all"]["n"] == metrics["composite"]["all"]["n"] == 6
    assert sum(metrics["model"][k]["n"] for k in kinds) == 6
    assert (out / "run" / "model.safetensors").is_file() and (out / "run" / "teacher.safetensors").is_file()
    # validation photos are whole photos that training never saw
    from giftnet.pipeline.ihd import read_pairs

    train, val = read_pairs(out / "data", None, "train"), read_pairs(out / "data", None, "test")
    assert {p.name.split("-")[0] for p in train}.isdisjoint({p.name.split("-")[0] for p in val})
    # a second run reuses the data and the finished run: same weights, same metrics
    weights = _tensors_and_metadata(out / "run" / "model.safetensors")
    again = _run(photos, out, config)
    assert again.returncode == 0, again.stderr[-3000:]
    # compared as tensors and metadata: safetensors may write its metadata keys in another order
    after = _tensors_and_metadata(out / "run" / "model.safetensors")
    assert after[1] == weights[1] and after[0].keys() == weights[0].keys()
    assert all(torch.equal(after[0][k], weights[0][k]) for k in weights[0])
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_recipe_refuses_a_missing_photo_folder(tmp_path):
    result = _run(tmp_path / "nope", tmp_path / "out", ROOT / "configs" / "realphoto.json")
    assert result.returncode == 2 and "--photos" in result.stderr and "Traceback" not in result.stderr


def _tensors_and_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def test_every_shipped_recipe_config_is_a_valid_recipe():
    """configs/*.json: the three sections, a train section the trainer's strict loader accepts."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import realphoto

    from giftnet.training.config import TrainConfig

    paths = sorted((ROOT / "configs").glob("*.json"))
    assert len(paths) >= 2
    for path in paths:
        recipe = realphoto.read_recipe(path)
        cfg = TrainConfig.from_dict(recipe["train"] | {"data": "x"}, where=str(path))
        assert cfg.epochs >= 1 and set(recipe["data"]) == {"n_train", "n_val", "size", "seed"}, path
