"""The real-photo recipe end to end at a tiny size: photos with masks -> composites -> train -> per-kind metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
N_PHOTOS = 24  # >= 20: the split holds out whole photos


def _photos(folder: Path) -> Path:
    """Smooth colour fields, each with one elliptic object of another colour and its mask."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    for i in range(N_PHOTOS):
        base = rng.uniform(40, 200, 3) + 40 * np.stack([xx, yy, xx * yy], -1)
        cy, cx, ry, rx = (
            rng.uniform(0.35, 0.65),
            rng.uniform(0.35, 0.65),
            rng.uniform(0.15, 0.3),
            rng.uniform(0.15, 0.3),
        )
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        image = np.where(mask[..., None], rng.uniform(30, 230, 3) + 30 * yy[..., None], base)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / "images" / f"p{i:02d}.jpg", quality=95)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"p{i:02d}.png")
    return folder


def _recipe(path: Path) -> Path:
    recipe = json.loads((ROOT / "configs" / "realphoto.json").read_text())
    recipe["data"] |= {"n_train": 8, "n_val": 6, "size": 32}
    recipe["train"] |= {"epochs": 1, "teacher_epochs": 1, "batch_size": 4, "crop_size": 16, "eval_size": 16,
                        "workers": 0, "log_every": 1, "ckpt_every": 1,
                        "model": {"base_channels": 8}}  # fmt: skip
    recipe["eval"] = {"size": 32, "batch_size": 4}
    path.write_text(json.dumps(recipe))
    return path


def _run(photos: Path, out: Path, config: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "scripts" / "realphoto.py"), "--photos", str(photos), "--out", str(out)]
    return subprocess.run([*cmd, "--config", str(config)], env=env, capture_output=True, text=True, timeout=600)


def test_recipe_builds_trains_scores_and_resumes(tmp_path):
    photos, out, config = _photos(tmp_path / "photos"), tmp_path / "recipe", _recipe(tmp_path / "recipe.json")
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
