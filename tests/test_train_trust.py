"""The trainer's promises (issue 11): evaluation changes nothing, exact resume after a kill following
any file the run writes, no teacher without distillation, repaired logs, an exclusive run folder,
prompt stops, refused resume changes, loud divergence, and DDP ranks that stop together."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from giftnet.config import ModelConfig
from giftnet.model import build_model
from giftnet.pipeline.augment import epoch_order
from giftnet.pipeline.ihd import read_pairs
from giftnet.pipeline.validation import carve_validation
from giftnet.training import evaluation as evaluation_module
from giftnet.training import loop, stage
from giftnet.training import run as run_module
from giftnet.training.checkpoint import Progress, load_checkpoint, read_metadata, read_progress
from giftnet.training.cli import main
from giftnet.training.config import TrainConfig
from giftnet.training.evaluation import make_evaluator
from giftnet.weights import save_weights
from tests.train_helpers import (
    ENV,
    ROOT,
    TINY_VAL_FRACTION,
    VAL_ARGS,
    assert_same_weights,
    build_tiny_data,
    free_port,
    start_train_py,
    train_py,
    wait_for,
)
from tests.train_helpers import train_args as helper_train_args


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_data(tmp_path_factory.mktemp("data"), with_validation=True)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """train_helpers.train_args with a validation split of 4 pairs (16 pairs left to train on)."""
    return helper_train_args(data, out, *VAL_ARGS, *extra)


@pytest.fixture(scope="module")
def evaluated_run(tiny_data, tmp_path_factory) -> Path:
    """An uninterrupted run evaluated after every epoch."""
    out = tmp_path_factory.mktemp("evaluated")
    assert main(train_args(tiny_data, out)) == 0
    return out


def eval_records(out: Path, split: str = "validation") -> list[tuple[int, float]]:
    records = map(json.loads, (out / "eval.jsonl").open())
    return [(r["step"], r["model"]["all"]["mse"]) for r in records if r["split"] == split]


def stats_steps(out: Path) -> list[tuple[str, int]]:
    return [(r["stage"], r["step"]) for r in map(json.loads, (out / "stats.jsonl").open())]


# --- 1. evaluation does not change training -----------------------------------------------------


def rng_states() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_an_evaluation_leaves_parameters_buffers_and_random_streams_untouched(tiny_data, tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"), eval_size=32, eval_batch_size=4, backend="torch", workers=0,
                      model=ModelConfig(base_channels=8))  # fmt: skip
    ctx = stage.Context(cfg, torch.device("cpu"))
    model = build_model(cfg.model).train()
    model(torch.randn(2, 3, 32, 32), torch.ones(2, 1, 32, 32))  # running stats away from their init
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = rng_states()
    progress = Progress(epoch=1, step=4)
    val = carve_validation(read_pairs(tiny_data, split="train"), float(TINY_VAL_FRACTION))[1]
    make_evaluator(ctx, val, read_pairs(tiny_data, split="test"))(model, progress)
    after = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed, changed  # num_batches_tracked and running stats included
    assert model.training
    now = rng_states()
    assert torch.equal(rng[0], now[0]) and np.array_equal(rng[1], now[1]) and rng[2] == now[2]
    assert progress.best < float("inf")
    for name in ("eval.jsonl", "best-model.safetensors", "samples/step000000004.png"):
        assert (tmp_path / "run" / name).is_file(), name


def test_evaluating_every_epoch_gives_the_weights_of_a_run_without_evaluation(tiny_data, evaluated_run, tmp_path):
    out = tmp_path / "no-eval"
    assert main(train_args(tiny_data, out, "--eval-every", "0")) == 0
    assert_same_weights(evaluated_run / "model.safetensors", out / "model.safetensors")
    assert [s for s, _ in eval_records(evaluated_run)] == [4, 8]
    assert [s for s, _ in eval_records(out)] == [8]  # at the end only


# --- 2. exact resume after a kill right after each kind of file --------------------------------

# In the order the run writes them; each process resumes the folder and is killed after its N-th
# write of that kind: stage 1, the first evaluation (validation line, best-model, test line, sample,
# plot, its checkpoint), the final one, exports.
KILLS = [
    "config:1", "stats:1", "checkpoint:1", "teacher:1", "eval:1", "best:1", "eval:2", "sample:1", "plot:1",
    "checkpoint:1", "eval:1", "model:1", "plot:1",
]  # fmt: skip


@pytest.mark.slow
def test_a_kill_after_any_file_the_run_writes_resumes_to_the_same_run(tiny_data, evaluated_run, tmp_path):
    out = tmp_path / "killed"
    for hook in KILLS:
        argv = ["--resume", str(out)] if (out / "config.json").exists() else train_args(tiny_data, out)
        done = train_py(argv, hook=f"{hook}:kill")
        assert done.returncode == -signal.SIGKILL, (hook, done.stdout[-2000:], done.stderr[-2000:])
    done = train_py(["--resume", str(out)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name in ("teacher.safetensors", "model.safetensors", "best-model.safetensors"):
        assert_same_weights(evaluated_run / name, out / name)
    for split in ("validation", "test"):
        assert eval_records(out, split) == eval_records(evaluated_run, split)
    assert stats_steps(out) == stats_steps(evaluated_run)  # no step logged twice or lost
    assert not list(out.glob(".*.tmp")) and not list(out.glob("samples/.*.tmp"))


def test_the_epoch_end_checkpoint_holds_the_evaluation(evaluated_run):
    stage, progress = read_progress(sorted(evaluated_run.glob("ckpt-harmonization-*"))[-1])
    assert (stage, progress.step, progress.evaluated) == ("harmonization", 8, 8)
    best = min(mse for _, mse in eval_records(evaluated_run))
    assert progress.best == best
    assert read_metadata_mse(evaluated_run / "best-model.safetensors") == best
    assert [s for s, _ in eval_records(evaluated_run, "test")] == [4, 8]  # scored for reporting only


def test_best_model_is_selected_on_validation_images_that_are_never_trained_on(
    tiny_data, tmp_path, monkeypatch, capsys
):
    trained, scored = [], []
    real_loader, real_evaluate = stage.make_train_loader, evaluation_module.evaluate

    def spy_loader(pairs, **kw):
        trained.append(list(pairs))
        return real_loader(pairs, **kw)

    def spy_evaluate(model, pairs, **kw):
        scored.append((kw["description"].split()[0], list(pairs)))
        return real_evaluate(model, pairs, **kw)

    monkeypatch.setattr(stage, "make_train_loader", spy_loader)
    monkeypatch.setattr(evaluation_module, "evaluate", spy_evaluate)
    out = tmp_path / "val"
    assert main(train_args(tiny_data, out, "--epochs", "1")) == 0
    val = {p.real for split, pairs in scored if split == "validation" for p in pairs}
    test = {p.real for split, pairs in scored if split == "test" for p in pairs}
    assert [len(t) for t in trained] == [16, 16] and len(val) == 3 and test  # both stages, 4 validation pairs
    assert not val & {p.real for pairs in trained for p in pairs}  # no validation image is trained on
    assert {p.real for p in read_pairs(tiny_data, split="train")} == val | {p.real for p in trained[0]}
    records = [json.loads(line) for line in (out / "eval.jsonl").open()]
    assert [r["split"] for r in records] == ["validation", "test"]
    assert read_metadata_mse(out / "best-model.safetensors") == records[0]["model"]["all"]["mse"]
    from safetensors import safe_open

    with safe_open(str(out / "best-model.safetensors"), framework="pt") as f:
        assert f.metadata()["selected_on"] == "validation split"
    # stdout is not a terminal here: each evaluation's progress is a plain timestamped line
    text = capsys.readouterr().out
    for what in ("validation step 4 4/4", "test step 4 4/4"):
        assert re.search(rf"^\S+\+00:00  {what}  \S+ img/s  eta 0:00:00$", text, re.M), text


def test_without_a_validation_split_no_best_model_is_selected_and_the_log_says_so(tiny_data, tmp_path, capsys):
    out = tmp_path / "noval"
    argv = train_args(tiny_data, out, "--distill", "none", "--epochs", "1", "--val-fraction", "0")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "no best model is selected; the result is model.safetensors, the last weights" in text
    assert "for reporting only" in text
    assert not (out / "best-model.safetensors").exists() and (out / "model.safetensors").is_file()
    assert [r["split"] for r in map(json.loads, (out / "eval.jsonl").open())] == ["test"]


def read_metadata_mse(path: Path) -> float:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return float(f.metadata()["mse"])


# --- 3. no distillation: no reconstruction branch, no teacher ----------------------------------


def test_no_distillation_trains_no_reconstruction_branch_and_runs_no_teacher(tiny_data, tmp_path, monkeypatch, capsys):
    def no_teacher(*a, **kw):
        raise AssertionError("a teacher was loaded or built")

    monkeypatch.setattr(run_module, "load_teacher", no_teacher)
    monkeypatch.setattr(stage, "build_teacher", no_teacher)
    out = tmp_path / "none"
    assert main(train_args(tiny_data, out, "--distill", "none", "--epochs", "1")) == 0
    text = capsys.readouterr().out
    assert "no distillation: the reconstruction branch is not trained and no teacher runs" in text
    assert "reconstruction (" not in text
    assert not (out / "teacher.safetensors").exists() and not list(out.glob("ckpt-reconstruction-*"))
    assert (out / "model.safetensors").is_file()
    assert {r["stage"] for r in map(json.loads, (out / "stats.jsonl").open())} == {"harmonization"}


# --- 4. logs: a cut last line is repaired at start, a damaged line refused ---------------------


def test_a_cut_last_log_line_is_repaired_when_the_run_resumes(evaluated_run, tmp_path, capsys):
    out = tmp_path / "cut"
    shutil.copytree(evaluated_run, out)
    for name in ("stats.jsonl", "eval.jsonl"):
        with (out / name).open("a") as f:
            f.write('{"stage": "harmonization", "step": 9, "tot')  # a full disk cut the append
    assert main(["--resume", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.index("removed a last line cut by an interrupted write") < text.index("exported")
    assert stats_steps(out) == stats_steps(evaluated_run)
    assert eval_records(out) == eval_records(evaluated_run)


def test_a_damaged_log_line_is_refused_before_any_work(evaluated_run, tmp_path, capsys):
    out = tmp_path / "damaged"
    shutil.copytree(evaluated_run, out)
    lines = (out / "stats.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (out / "stats.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'stats.jsonl'}: line 2 is damaged" in err and "Traceback" not in err


# --- 5. one trainer per run folder -------------------------------------------------------------


def test_a_second_trainer_on_a_running_folder_is_refused_naming_the_holder(tiny_data, tmp_path, capsys):
    out = tmp_path / "busy"
    first = start_train_py(train_args(tiny_data, out, "--epochs", "100", "--teacher-epochs", "100"))
    try:
        wait_for("ckpt-*", out, first)
        for argv in (train_args(tiny_data, out), ["--resume", str(out)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"is in use by another trainer (pid {first.pid})" in err, err
        assert first.poll() is None  # the first one was left alone
    finally:
        first.kill()
        first.communicate()


# --- 6. signals: during the final evaluation; Ctrl-C twice during a checkpoint write -------------


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_stops_at_once_and_resume_redoes_it(tiny_data, evaluated_run, tmp_path):
    out = tmp_path / "term"
    t0 = time.monotonic()
    done = train_py(train_args(tiny_data, out), hook="eval-start:2:term")  # the second (final) evaluation
    assert done.returncode == 128 + signal.SIGTERM, done.stdout[-2000:] + done.stderr[-2000:]
    assert "stopped during the evaluation" in done.stdout and "--resume" in done.stdout
    assert "Traceback" not in done.stderr
    assert not (out / "model.safetensors").exists()
    assert [s for s, _ in eval_records(out)] == [4]
    assert time.monotonic() - t0 < 120
    assert main(["--resume", str(out)]) == 0
    assert eval_records(out) == eval_records(evaluated_run)
    assert_same_weights(evaluated_run / "model.safetensors", out / "model.safetensors")
    assert_same_weights(evaluated_run / "best-model.safetensors", out / "best-model.safetensors")


@pytest.mark.slow
def test_ctrl_c_twice_during_a_checkpoint_write_keeps_the_checkpoints_and_prints_no_traceback(
    tiny_data, evaluated_run, tmp_path
):
    out = tmp_path / "int2"
    # Both Ctrl-Cs arrive while the third checkpoint (harmonization step 2) is being written: the
    # write finishes, then the run aborts.
    done = train_py(train_args(tiny_data, out), hook="checkpoint-writing:3:int2")
    assert done.returncode == 130, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    name = "ckpt-harmonization-000000002.safetensors"
    assert f"aborted by a second Ctrl-C; the last checkpoint {name} is intact" in done.stdout
    assert not list(out.glob(".*.tmp"))
    model = build_model(ModelConfig(base_channels=8))
    opt = torch.optim.Adam(model.parameters())
    progress = load_checkpoint(
        out / name, model=model, optimizer=opt, scaler=torch.amp.GradScaler("cpu", init_scale=1.0)
    )
    assert progress.step == 2
    assert read_metadata(out / "ckpt-reconstruction-000000004.safetensors")["stage"] == "reconstruction"
    assert main(["--resume", str(out)]) == 0
    assert_same_weights(evaluated_run / "model.safetensors", out / "model.safetensors")


# --- 7. --resume refuses settings that change the result ---------------------------------------


def test_resume_refuses_changed_settings_naming_each_and_allows_the_harmless_ones(evaluated_run, tmp_path, capsys):
    out = tmp_path / "changed"
    shutil.copytree(evaluated_run, out)
    assert main(["--resume", str(out), "--batch-size", "8", "--crop-size", "40", "--seed", "3", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    for field in ("batch_size (4 -> 8)", "crop_size (32 -> 40)", "seed (0 -> 3)", "lr (0.001 -> 0.01)"):
        assert field in err, err
    assert f"--init-weights {out / 'model.safetensors'}" in err and "another --out" in err
    assert main(["--resume", str(out), "--log-every", "1", "--workers", "1", "--keep-last", "5"]) == 0


# --- 8. a run whose every step is non-finite stops loudly ----------------------------------------


def test_a_stage_without_one_finite_step_stops_with_a_message(tiny_data, tmp_path, monkeypatch, capsys):
    real = loop.total_loss

    def nan_loss(*a, **kw):
        parts = real(*a, **kw)
        return dict(parts, total=parts["total"] * float("nan"))

    monkeypatch.setattr(loop, "total_loss", nan_loss)
    out = tmp_path / "nan"
    assert main(train_args(tiny_data, out, "--stage", "reconstruction")) == 1  # 4 steps < --max-bad-steps 50
    err = capsys.readouterr().err
    assert "every one of the 4 steps of the reconstruction stage had a non-finite loss" in err
    assert not (out / "teacher.safetensors").exists()


def test_nan_init_weights_never_end_in_a_successful_run(tiny_data, tmp_path, capsys):
    model = build_model(ModelConfig(base_channels=8))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    weights = tmp_path / "nan.safetensors"
    save_weights(model, weights)
    out = tmp_path / "run"
    argv = train_args(tiny_data, out, "--stage", "harmonization", "--distill", "none", "--epochs", "1")
    code = main([*argv, "--init-weights", str(weights)])
    assert code in (1, 2)  # refused by the weights loader, or stopped by the trainer
    assert "Traceback" not in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


# --- for the people who run it (issue 13) ---------------------------------------------------------


def test_without_a_terminal_each_log_interval_is_one_plain_timestamped_line(tiny_data, evaluated_run, tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(train_args(tiny_data, out, "--stage", "reconstruction")) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " reconstruction epoch " in ln]
    assert len(lines) == 2  # steps 2 and 4
    pattern = (r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00  reconstruction epoch 0 step 4/4  total \S+  har \S+  "
               r"skipped 0  lr 0.001  \S+ img/s  eta \S+$")  # fmt: skip
    assert re.match(pattern, lines[1]), lines[1]
    assert all("time" in r for r in map(json.loads, (out / "stats.jsonl").open()))
    info = json.loads((out / "run-info.json").read_text())
    assert (info["device"], info["precision"], info["backend"], info["world_size"]) == ("cpu", "fp32", "torch", 1)
    assert (
        info["versions"]["torch"] == torch.__version__.split("+")[0] or info["versions"]["torch"] == torch.__version__
    )
    assert json.loads((out / "config.json").read_text())["precision"] == "auto"  # the setting as given
    assert sorted(p.name for p in (evaluated_run / "samples").iterdir()) == ["step000000004.png", "step000000008.png"]


# --- 9. DDP: a rank that cannot decode a file stops every rank within seconds, with a checkpoint -------


@pytest.mark.slow
def test_a_bad_file_met_by_one_ddp_rank_stops_all_ranks_within_seconds(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    pairs = carve_validation(read_pairs(root, split="train"), float(TINY_VAL_FRACTION))[0]  # what is trained on
    victim = pairs[int(epoch_order(len(pairs), seed=0, epoch=0)[9])].composite  # the third global batch
    data = victim.read_bytes()
    victim.write_bytes(data[: data.index(b"\xff\xda") + 40])  # the header parses, the scan is cut
    out = tmp_path / "ddp"
    argv = train_args(root, out, "--stage", "reconstruction", "--ckpt-every", "100")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(ROOT / "train.py"), *argv]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    text = done.stdout + done.stderr
    assert done.returncode != 0, text[-3000:]
    assert str(victim) in text and "checkpoint saved at step" in text, text[-3000:]
    step = int(text.split("checkpoint saved at step ")[1].split(".")[0])
    assert (out / f"ckpt-reconstruction-{step:09d}.safetensors").is_file() or step == 0
    assert wall < 120, f"{wall:.0f} s to stop (the collective timeout is 30 min)"
    print(f"two gloo ranks stopped {wall:.1f} s after the start (including start-up)")
