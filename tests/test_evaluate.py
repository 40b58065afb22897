"""giftnet.evaluate end to end on a tiny iHarmony4-layout dataset and a tiny random model."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from torch import nn

from giftnet.config import ModelConfig
from giftnet.errors import UsageError
from giftnet.evaluate import evaluate, format_table, main
from giftnet.metrics import image_metrics
from giftnet.model import GiftNet
from giftnet.pipeline.ihd import read_pairs
from giftnet.pipeline.resize import cv2_linear_resize_u8
from giftnet.progress import PlainProgress
from giftnet.protocols import Protocol
from giftnet.weights import load_weights, save_weights

SIZE = 32  # evaluation resolution: a multiple of 8, small for speed
KEYS = {"mse", "fmse", "psnr", "fpsnr", "fssim", "n"}
# (subset, real id, height, width): odd shapes, two test subsets and one with only a train list.
LAYOUT = [
    ("SubA", "a1", 64, 80),
    ("SubA", "a2", 77, 64),
    ("SubA", "a3", 96, 72),
    ("SubB", "b1", 72, 96),
    ("SubB", "b2", 64, 64),
    ("SubC", "c1", 64, 64),
]


def make_dataset(root: Path) -> None:
    """A few composite/mask/real triplets: a smooth photo-like image, a cast inside an ellipse."""
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {}
    for subset, real_id, h, w in LAYOUT:
        for folder in ("composite_images", "masks", "real_images"):
            (root / subset / folder).mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], axis=2) * 160 + 40
        real = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        inside = ((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1
        cast = rng.uniform(0.6, 1.4, 3)
        comp = np.where(inside[:, :, None], np.clip(real * cast, 0, 255), real).astype(np.uint8)
        Image.fromarray(real).save(root / subset / "real_images" / f"{real_id}.jpg", quality=95)
        Image.fromarray(comp).save(root / subset / "composite_images" / f"{real_id}_1_1.jpg", quality=95)
        Image.fromarray((inside * 255).astype(np.uint8)).save(root / subset / "masks" / f"{real_id}_1.png")
        lists.setdefault(subset, []).append(f"{real_id}_1_1.jpg")
    for subset, names in lists.items():
        split = "train" if subset == "SubC" else "test"
        (root / subset / f"{subset}_{split}.txt").write_text("\n".join(names) + "\n")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ihd")
    make_dataset(root)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(GiftNet(ModelConfig(base_channels=8)), path)
    return path


class Identity(nn.Module):
    """A "model" that returns the composite unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"images": image.clone()}


def run(model: nn.Module, pairs, **kw) -> dict:
    opts = {"batch_size": 2, "size": SIZE, "device": "cpu", "backend": "torch", "num_workers": 0, "progress": False}
    return evaluate(model, pairs, **(opts | kw))


def direct_composite_rows(pairs, size: int | None = SIZE, **conventions) -> dict[str, dict[str, float]]:
    """The composite row from the files, independently of the loaders: OpenCV's uint8 bilinear
    (giftnet.pipeline.resize, checked against OpenCV in test_resize) for images, float bilinear for the mask;
    `size` None scores at full resolution."""

    def load(path: Path, mode: str) -> torch.Tensor:
        arr = np.asarray(Image.open(path).convert(mode))
        if mode == "RGB" and size is not None:
            arr = cv2_linear_resize_u8(arr, size, size)
        t = torch.from_numpy(arr.astype(np.float32).reshape(*arr.shape[:2], -1)).permute(2, 0, 1)[None]
        if mode == "L" and size is not None:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return t

    per: dict[str, list[dict[str, float]]] = {}
    for p in pairs:
        comp, real = (load(x, "RGB") for x in (p.composite, p.real))
        mask = load(p.mask, "L") / 255.0
        m = image_metrics(comp, real, mask, **conventions)
        per.setdefault(p.subset, []).append({k: float(v[0]) for k, v in m.items()})
    per["all"] = [r for s in sorted(per) for r in per[s]]
    return {s: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"n": len(rows)} for s, rows in per.items()}


def test_structure_and_composite_row_match_direct_metrics(data_root: Path, weights: Path) -> None:
    pairs = read_pairs(data_root, None, "test")
    model = load_weights(weights).train()
    res = run(model, pairs)
    assert model.training, "evaluate must restore the model's training mode"
    assert set(res) == {"model", "composite"}
    for kind in res.values():
        assert list(kind) == ["SubA", "SubB", "all"]  # SubC has only a train list
        assert all(set(row) == KEYS for row in kind.values())
        assert [kind[s]["n"] for s in kind] == [3, 2, 5]
        for k in ("mse", "fmse", "psnr", "fssim"):  # "all" is the mean over images, not over subsets
            assert kind["all"][k] == pytest.approx((3 * kind["SubA"][k] + 2 * kind["SubB"][k]) / 5, rel=1e-12)
    direct = direct_composite_rows(pairs)
    for subset, row in direct.items():
        for k, v in row.items():
            assert res["composite"][subset][k] == pytest.approx(v, rel=1e-9, abs=1e-9), (subset, k)
    assert res["composite"]["all"]["mse"] > 1.0  # the cast makes the composite differ from the real image
    assert res["model"]["all"]["mse"] != pytest.approx(res["composite"]["all"]["mse"])


def test_identity_model_scores_as_the_composite(data_root: Path, tmp_path: Path) -> None:
    pairs = read_pairs(data_root, ["SubB"], "test")
    res = run(Identity(), pairs, batch_size=3, save_images=tmp_path / "out")
    assert list(res["model"]) == ["SubB", "all"]
    for subset, row in res["composite"].items():
        for k, v in row.items():
            assert res["model"][subset][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (subset, k)
    saved = sorted((tmp_path / "out" / "SubB").iterdir())
    assert [p.name for p in saved] == ["b1_1_1.png", "b2_1_1.png"]
    # at the original size; the identity's change is zero, so the file is the composite itself
    for path, pair in zip(saved, pairs, strict=True):
        written, original = np.asarray(Image.open(path)), np.asarray(Image.open(pair.composite).convert("RGB"))
        assert written.shape == original.shape
        np.testing.assert_array_equal(written, original)


@pytest.mark.parametrize("name", ["full", "longest1024"])
def test_full_resolution_protocols_score_at_the_images_size(data_root: Path, weights: Path, name: str) -> None:
    """Odd sizes (77x64) are padded to a multiple of 8 for the network and cropped back."""
    pairs = read_pairs(data_root, None, "test")
    res = run(Identity(), pairs, protocol=Protocol(name))
    direct = direct_composite_rows(pairs, size=None)
    for subset, row in direct.items():
        for k, v in row.items():
            assert res["composite"][subset][k] == pytest.approx(v, rel=1e-9, abs=1e-9), (subset, k)
            assert res["model"][subset][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (subset, k)
    fixed = run(Identity(), pairs)
    assert res["composite"]["all"]["mse"] != pytest.approx(fixed["composite"]["all"]["mse"])
    real = run(load_weights(weights), pairs, protocol=Protocol(name))  # a real network on odd sizes
    assert all(np.isfinite(real["model"]["all"][k]) for k in ("mse", "fssim"))


def test_protocol_sizes() -> None:
    assert Protocol("fixed", 128).target_size(3000, 2000) == (128, 128)
    assert Protocol("longest1024").target_size(1500, 6000) == (256, 1024)
    assert Protocol("longest1024").target_size(4000, 3000) == (1024, 768)
    assert Protocol("longest1024").target_size(800, 1024) == (800, 1024)  # not larger: kept
    assert Protocol("full").target_size(4000, 3001) == (4000, 3001)
    assert [Protocol("fixed", 128).label, Protocol("longest1024").label] == ["Fixed128", "LimitLongest1024"]
    with pytest.raises(ValueError, match="protocol"):
        Protocol("Fixed256")


def test_metric_conventions_reach_the_rows(data_root: Path) -> None:
    pairs = read_pairs(data_root, ["SubA"], "test")
    res = run(Identity(), pairs, psnr_peak="255", fssim_range="255")
    direct = direct_composite_rows(pairs, psnr_peak="255", fssim_range="255")
    for k in ("psnr", "fpsnr", "fssim"):
        assert res["composite"]["all"][k] == pytest.approx(direct["all"][k], rel=1e-9)
    default = run(Identity(), pairs)
    assert default["composite"]["all"]["psnr"] != pytest.approx(res["composite"]["all"]["psnr"])
    assert default["composite"]["all"]["fssim"] != pytest.approx(res["composite"]["all"]["fssim"])


def test_format_table_lists_every_row(data_root: Path) -> None:
    res = run(Identity(), read_pairs(data_root, ["SubA"], "test"))
    console = Console(width=120, record=True)
    console.print(format_table(res))
    text = console.export_text()
    assert text.count("composite") == 2 and text.count("model") == 2  # SubA and All
    assert "All" in text and "fSSIM" in text and f"{res['composite']['all']['mse']:.2f}" in text
    assert "Fixed256" in text and "CDTNet" in text  # the default conventions, named


def test_cli_json(data_root: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "res.json"
    argv = ["--data", str(data_root), "--weights", str(weights), "--json", str(out), "--size", str(SIZE)]
    rc = main([*argv, "--device", "cpu", "--backend", "torch", "--workers", "0", "--batch-size", "4", "--no-progress"])
    assert rc == 0
    got = json.loads(out.read_text())
    assert set(got) == {"settings", "model", "composite"} and list(got["model"]) == ["SubA", "SubB", "all"]
    assert got["settings"]["protocol"] == f"Fixed{SIZE}"  # the real protocol, not "Fixed256"
    assert "iSSAM" in got["settings"]["psnr_peak"] and "CDTNet" in got["settings"]["fssim_range"]
    expected = run(load_weights(weights), read_pairs(data_root, None, "test"))
    for kind in expected:
        for subset, row in expected[kind].items():
            assert got[kind][subset] == pytest.approx(row, rel=1e-6)  # batch 4 vs 2: conv rounding
    printed = capsys.readouterr().out
    assert "PSNR" in printed and f"Fixed{SIZE}" in printed and "Fixed256" not in printed
    rc = main([*argv, "--device", "cpu", "--backend", "torch", "--workers", "0", "--no-progress", "--psnr-peak", "255"])
    assert rc == 0 and json.loads(out.read_text())["settings"]["psnr_peak"] == "255 (PCT-Net)"


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing_root", "dataset root is not a directory"),
        ("unknown_subset", "NoSuchSubset"),
        ("missing_weights", "weights file does not exist"),
        ("bad_weights", "not a readable safetensors file"),
        ("bad_size", "--size must be a positive multiple of 8"),
    ],
)
def test_cli_bad_input(
    case: str, expect: str, data_root: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, w, extra = data_root, weights, []
    if case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "unknown_subset":
        extra = ["--subsets", "SubA", "NoSuchSubset"]
    elif case == "missing_weights":
        w = tmp_path / "absent.safetensors"
    elif case == "bad_weights":
        w = tmp_path / "garbage.safetensors"
        w.write_bytes(b"not a safetensors file at all")
    elif case == "bad_size":
        extra = ["--size", "30"]
    rc = main(["--data", str(root), "--weights", str(w), "--device", "cpu", "--backend", "torch", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: " in err.splitlines()[0] and expect in err and "Traceback" not in err
    if case in ("missing_root", "missing_weights", "bad_weights"):
        assert str(root if case == "missing_root" else w) in err


def test_module_entry_point_exit_status(tmp_path: Path) -> None:
    """`python -m giftnet.evaluate` itself: status 2 and a one-line message, no traceback."""
    missing = tmp_path / "missing.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "giftnet.evaluate", "--data", str(tmp_path), "--weights", str(missing)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"evaluate: error: {missing}: weights file does not exist"


def test_bf16_autocast_close_to_fp32(data_root: Path) -> None:
    torch.manual_seed(2)
    model = GiftNet(ModelConfig(base_channels=8))
    pairs = read_pairs(data_root, ["SubB"], "test")
    fp32 = run(model, pairs)["model"]["all"]
    bf16 = run(model, pairs, precision="bf16", progress=True)["model"]["all"]
    for k in ("mse", "fmse", "psnr", "fssim"):
        assert bf16[k] == pytest.approx(fp32[k], rel=0.05), k
    with pytest.raises(UsageError, match="precision must be one of"):
        run(model, pairs, precision="fp8")


def test_without_a_terminal_the_cli_prints_timestamped_progress_lines(data_root: Path, weights: Path) -> None:
    """stdout a pipe (SLURM, `> log`): no bar, plain lines DONE/TOTAL, img/s and ETA; the last at the end."""
    argv = ["--data", str(data_root), "--weights", str(weights), "--size", str(SIZE), "--batch-size", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "giftnet.evaluate", *argv, "--backend", "torch", "--workers", "0",
         "--progress-every", "0"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pattern = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00  evaluate (\d+)/5  \d+\.\d img/s  eta \d+:\d\d:\d\d$"
    done = [int(m.group(1)) for line in proc.stdout.splitlines() if (m := re.match(pattern, line))]
    assert done == [1, 2, 3, 4, 5], proc.stdout  # --progress-every 0: a line per batch of one
    assert "\x1b[" not in proc.stdout  # no terminal escapes in a log


def test_plain_progress_prints_first_every_interval_and_last() -> None:
    now = [0.0]
    out = io.StringIO()
    advance = PlainProgress(100, "validation step 8", every_s=30, stream=out, clock=lambda: now[0])
    for t in (1, 2, 31, 40, 62, 63, 70):  # 10 pairs per batch until 70 s, then the rest
        now[0] = t
        advance(10)
    now[0] = 80
    advance(30)
    lines = out.getvalue().splitlines()
    assert [ln.split("  ")[1] for ln in lines] == [
        "validation step 8 10/100", "validation step 8 30/100", "validation step 8 50/100", "validation step 8 100/100"
    ]  # fmt: skip
    assert lines[1].split("  ")[2:] == ["1.0 img/s", "eta 0:01:12"]  # 30 pairs in 31 s, 70 left
    assert lines[-1].split("  ")[2:] == ["1.2 img/s", "eta 0:00:00"]
