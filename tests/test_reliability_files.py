"""Untrusted files (issue 8, item 4): weights and checkpoints are read only through safetensors and
checked tensor by tensor; nothing in the packages can execute what a file contains."""

from __future__ import annotations

import ast
import inspect
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from giftnet.config import ModelConfig
from giftnet.model import GiftNet, build_teacher
from giftnet.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from giftnet.training.cli import main
from giftnet.weights import WeightsError, load_weights, save_weights

ROOT = Path(__file__).resolve().parents[1]
CFG = ModelConfig(base_channels=8, gift_sites=("E1",))


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a safetensors file with its tensors edited by `edit(tensors, metadata)`."""
    tensors, meta = load_file(src), _metadata(src)
    edit(tensors, meta)
    save_file(tensors, dst, metadata=meta)
    return dst


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_weights(GiftNet(CFG), path)
    return path


def _header_bomb(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")  # claims a 1 TB header


WEIGHT_FAULTS = {
    "truncated": (lambda src, dst: dst.write_bytes(src.read_bytes()[:-100]), "not a readable safetensors file"),
    "header_bomb": (lambda src, dst: _header_bomb(dst), "not a readable safetensors file"),
    "header_not_json": (
        lambda src, dst: dst.write_bytes(struct.pack("<Q", 8) + b"{{{{{{{{"),
        "not a readable safetensors file",
    ),
    "missing_tensor": (
        lambda src, dst: _rewrite(src, dst, lambda t, m: t.pop("decoder.to_rgb.weight")),
        "missing ['decoder.to_rgb.weight']",
    ),
    "extra_tensor": (
        lambda src, dst: _rewrite(src, dst, lambda t, m: t.update({"payload": torch.zeros(4, dtype=torch.uint8)})),
        "extra ['payload']",
    ),
    "int_dtype": (
        lambda src, dst: _rewrite(src, dst, lambda t, m: t.update({"decoder.to_rgb.bias": torch.zeros(3, dtype=torch.int32)})),
        "decoder.to_rgb.bias has dtype torch.int32",
    ),
    "float_counter": (  # BatchNorm's num_batches_tracked is int64: a float in its place is refused
        lambda src, dst: _rewrite(
            src, dst, lambda t, m: t.update({k: v.double() for k, v in t.items() if k.endswith("num_batches_tracked")})
        ),
        "num_batches_tracked has dtype torch.float64",
    ),
    "wrong_shape": (
        lambda src, dst: _rewrite(src, dst, lambda t, m: t.update({"decoder.to_rgb.bias": torch.zeros(4)})),
        "decoder.to_rgb.bias has shape (4,), expected (3,)",
    ),
    "config_not_json": (
        lambda src, dst: _rewrite(src, dst, lambda t, m: m.update({"model_config": "__import__('os')"})),
        "invalid model_config metadata",
    ),
    "config_unknown_field": (
        lambda src, dst: _rewrite(
            src, dst, lambda t, m: m.update({"model_config": json.dumps({"base_channels": 8, "code": "x"})})
        ),
        "invalid model_config metadata",
    ),
    "config_other_model": (  # declares a wider model than its tensors hold
        lambda src, dst: _rewrite(src, dst, lambda t, m: m.update({"model_config": json.dumps({"base_channels": 16, "gift_sites": ["E1"]})})),
        "has shape",
    ),
    "no_metadata": (lambda src, dst: save_file(load_file(src), dst), "not a GiftNet weights file"),
}  # fmt: skip


@pytest.mark.parametrize("fault", WEIGHT_FAULTS)
def test_weights_files_are_checked_before_use(weights, tmp_path, fault):
    make, message = WEIGHT_FAULTS[fault]
    bad = tmp_path / f"{fault}.safetensors"
    make(weights, bad)
    with pytest.raises(WeightsError, match=str(bad)) as info:
        load_weights(bad)
    assert message in str(info.value)


def test_half_precision_weights_are_accepted_and_cast(weights, tmp_path):
    half = _rewrite(weights, tmp_path / "half.safetensors",
                    lambda t, m: t.update({k: v.half() for k, v in t.items() if v.is_floating_point()}))  # fmt: skip
    model = load_weights(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ---- training checkpoints ------------------------------------------------------------------------


def _parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    model = build_teacher(ModelConfig(base_channels=8))
    return model, torch.optim.Adam(model.parameters()), torch.amp.GradScaler("cpu", init_scale=1.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model, opt, scaler = _parts()
    image, mask = torch.randn(2, 3, 16, 16), torch.ones(2, 1, 16, 16)
    model(image, mask)["images"].square().mean().backward()
    opt.step()  # optimizer state exists
    path = tmp_path_factory.mktemp("c") / "ckpt-reconstruction-000000007.safetensors"
    save_checkpoint(path, stage="reconstruction", model=model, optimizer=opt, scaler=scaler,
                    progress=Progress(1, 2, 7, 0, 0.5), train_config={"model": model.config.to_dict()})  # fmt: skip
    return path


def test_checkpoint_round_trip(checkpoint):
    model, opt, scaler = _parts()
    progress = load_checkpoint(checkpoint, model=model, optimizer=opt, scaler=scaler)
    assert (progress.epoch, progress.batch, progress.step, progress.best) == (1, 2, 7, 0.5)
    saved = load_file(checkpoint)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[f"model.{k}"]), k
    assert len(opt.state) == len(list(model.parameters()))
    assert torch.equal(torch.get_rng_state(), saved["rng.torch"])


def _first(tensors: dict, prefix: str, suffix: str = "") -> str:
    return next(k for k in sorted(tensors) if k.startswith(prefix) and k.endswith(suffix))


CHECKPOINT_FAULTS = {
    "missing_progress": (lambda t, m: t.pop("progress"), "no tensor 'progress'"),
    "missing_rng": (lambda t, m: t.pop("rng.torch"), "no tensor 'rng.torch'"),
    "missing_model_tensor": (lambda t, m: t.pop("model.decoder.to_rgb.weight"), "missing ['decoder.to_rgb.weight']"),
    "extra_tensor": (lambda t, m: t.update({"payload": torch.zeros(8, dtype=torch.uint8)}), "unexpected tensors in the checkpoint: ['payload']"),
    "extra_model_tensor": (lambda t, m: t.update({"model.extra": torch.zeros(1)}), "extra ['extra']"),
    "model_shape": (lambda t, m: t.update({"model.decoder.to_rgb.bias": torch.zeros(5)}), "decoder.to_rgb.bias has shape (5,)"),
    "optimizer_shape": (lambda t, m: t.update({_first(t, "optim.0.", "exp_avg"): torch.zeros(2)}), "has shape (2,), expected () or"),
    "optimizer_dtype": (lambda t, m: t.update({_first(t, "optim.0.", "exp_avg_sq"): torch.zeros(1, dtype=torch.int64)}), "expected a float"),
    "optimizer_foreign": (lambda t, m: t.update({"optim.9999.exp_avg": torch.zeros(1)}), "does not belong to this model's optimizer"),
    "progress_dtype": (lambda t, m: t.update({"progress": t["progress"].double()}), "progress has dtype torch.float64"),
    "progress_negative": (lambda t, m: t.update({"progress": torch.tensor([0, -1, 5, 0, 5])}), "negative progress"),
    "rng_shape": (lambda t, m: t.update({"rng.torch": torch.zeros(3, dtype=torch.uint8)}), "rng.torch has shape (3,)"),
    "scaler_shape": (lambda t, m: t.update({"scaler.scale": torch.zeros(2)}), "scaler.scale has shape (2,)"),
    "scalars_not_json": (lambda t, m: m.update({"optimizer_scalars": "{oops"}), "damaged checkpoint metadata"),
    "scalars_unknown_kind": (lambda t, m: m.update({"optimizer_scalars": json.dumps({"optim.0.step": "os.system"})}), "damaged checkpoint metadata"),
    "best_not_a_number": (lambda t, m: m.update({"best": "__import__('os')"}), "damaged checkpoint metadata"),
    "not_a_checkpoint": (lambda t, m: m.update({"format": "giftnet-weights"}), "not a GiftNet training checkpoint"),
}  # fmt: skip


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS)
def test_checkpoints_are_checked_before_anything_is_restored(checkpoint, tmp_path, fault):
    edit, message = CHECKPOINT_FAULTS[fault]
    bad = _rewrite(checkpoint, tmp_path / checkpoint.name, edit)
    model, opt, scaler = _parts()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(WeightsError, match=str(bad)) as info:
        load_checkpoint(bad, model=model, optimizer=opt, scaler=scaler)
    assert message in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-restored
    assert not opt.state and torch.equal(torch.get_rng_state(), rng)


def test_resume_from_a_damaged_checkpoint_is_a_message(tmp_path, capsys):
    from giftnet.pipeline.builders.synth import build_demo_dataset

    data = build_demo_dataset(tmp_path / "data", n_train=4, n_test=1, size=40, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(data), "out": str(run)}))
    bad = run / "ckpt-harmonization-000000010.safetensors"
    bad.write_bytes(b"\x80\x04\x95 a pickle, not a safetensors file")
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable safetensors checkpoint" in err and "Traceback" not in err


# ---- nothing executes what a file contains -------------------------------------------------------

SCANNED = ["kernels", "giftnet", "pipeline", "bench", "train.py"]
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "yaml", "jsonpickle"}  # fmt: skip
UNSAFE_CALLS = {"torch.load", "torch.jit.load", "torch.hub.load", "pd.read_pickle", "pandas.read_pickle"}
UNSAFE_BUILTINS = {"eval", "exec", "compile"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_uses(source: str, filename: str = "<source>") -> list[str]:
    """Each import of a deserialiser that can run code, each such call, and each np.load that could unpickle."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            constant_import = name == "__import__" and all(isinstance(a, ast.Constant) for a in node.args)
            if name in UNSAFE_CALLS or name in UNSAFE_BUILTINS or (name == "__import__" and not constant_import):
                found.append(f"{where}: {name}(...)")
            elif name in ("np.load", "numpy.load"):
                flag = next((k.value for k in node.keywords if k.arg == "allow_pickle"), None)
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    found.append(f"{where}: {name}(..., allow_pickle={ast.unparse(flag)})")
    return found


def test_the_scanner_finds_what_it_looks_for():
    planted = """
import pickle
from yaml import load
import torch, numpy as np
torch.load("x.pt")
eval("1 + 1")
exec("pass")
__import__(module_named_by_a_file)
__import__("os")                  # a fixed module is fine
np.load("a.npy", allow_pickle=True)
np.load("a.npy", allow_pickle=flag)
model.eval()                      # a method, not the builtin
torch.compile(model)              # not the builtin compile
np.load("a.npy", allow_pickle=False)
np.load("a.npy")
"""
    found = unsafe_uses(planted)
    assert len(found) == 8, found
    assert [f.split(": ", 1)[1] for f in found] == [
        "import pickle", "from yaml import", "torch.load(...)", "eval(...)", "exec(...)", "__import__(...)",
        "np.load(..., allow_pickle=True)", "np.load(..., allow_pickle=flag)",
    ]  # fmt: skip


def test_no_code_execution_from_files_anywhere_in_the_packages():
    files = [p for s in SCANNED for p in ([ROOT / s] if s.endswith(".py") else sorted((ROOT / s).rglob("*.py")))]
    assert len(files) > 30
    found = [f for p in files for f in unsafe_uses(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []
    # np.load without allow_pickle (the bundled ccHarmony matrices) relies on numpy's default, which is False.
    assert inspect.signature(np.load).parameters["allow_pickle"].default is False
