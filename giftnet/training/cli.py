"""Command line of train.py: flags map one-to-one onto TrainConfig fields."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from giftnet.ablations import ablation
from giftnet.config import LossConfig, ModelConfig
from giftnet.training.config import DEMO_PROFILE, TrainConfig

S = argparse.SUPPRESS

# flag -> (TrainConfig field or "model.x"/"loss.x", type, help)
FLAGS: dict[str, tuple[str, Any, str]] = {
    "--data": ("data", str, "iHarmony4-layout dataset root (default: the built-in demo dataset)"),
    "--subsets": ("subsets", "list", "subset folders under --data (default: all with a train list)"),
    "--out": ("out", str, "run folder (checkpoints, logs, exported weights)"),
    "--stage": ("stage", str, "all | reconstruction | harmonization"),
    "--epochs": ("epochs", int, "epochs of the harmonization branch (paper: 120)"),
    "--teacher-epochs": ("teacher_epochs", int, "epochs of the reconstruction branch (default: --epochs)"),
    "--milestones": ("milestones", "ints", "epochs where lr drops x0.1 (default: 105/120 and 115/120 of --epochs)"),
    "--lr": ("lr", float, "Adam learning rate (paper: 1e-3)"),
    "--batch-size": ("batch_size", int, "global batch size, split over the ranks (paper: 16)"),
    "--crop-size": ("crop_size", int, "training crop size (paper: 256)"),
    "--eval-size": ("eval_size", int, "evaluation size (Fixed256: 256)"),
    "--eval-batch-size": ("eval_batch_size", int, "evaluation batch size"),
    "--eval-every": ("eval_every", int, "evaluate every N epochs (0: only at the end)"),
    "--precision": ("precision", str, "auto | fp32 | bf16 | fp16"),
    "--device": ("device", str, "auto | cpu | cuda"),
    "--optimizer": ("optimizer", str, "adam (paper; fused on CUDA) | apex (NVIDIA apex FusedAdam, if built) | sgd"),
    "--seed": ("seed", int, "random seed"),
    "--workers": ("workers", int, "data-loading CPU workers per rank"),
    "--backend": ("backend", str, "data pipeline: auto | dali | torch"),
    "--init-weights": ("init_weights", str, "fine-tune from these GiftNet weights (e.g. ccHarmony after iHarmony4)"),
    "--teacher-weights": ("teacher_weights", str, "use this reconstruction branch instead of training one"),
    "--log-every": ("log_every", int, "log interval in steps"),
    "--ckpt-every": ("ckpt_every", int, "checkpoint interval in steps (also at every epoch end)"),
    "--keep-last": ("keep_last", int, "checkpoints kept per stage"),
    "--max-bad-steps": ("max_bad_steps", int, "stop after this many consecutive non-finite losses"),
    "--demo-pairs": ("demo_pairs", "ints", "built-in dataset: TRAIN TEST pair counts"),
    "--demo-size": ("demo_size", int, "built-in dataset: image short side"),
    "--gift-sites": ("model.gift_sites", "list", "GIFT sites among E1-E4, D1-D3 (default: E1 E2 E3 E4 D2 D3)"),
    "--guidance": ("model.guidance", str, "global | none | self"),
    "--base-channels": ("model.base_channels", int, "backbone width (iSSAM: 32)"),
    "--loss": ("loss.harmonization", str, "l1 (paper) | fn_mse (iSSAM)"),
    "--distill": ("loss.distill", str, "relation | feature | none"),
    "--distill-sites": ("loss.distill_sites", "list", "maps to distil (default: E1 E2 E3 E4)"),
    "--distill-weight": ("loss.distill_weight", float, "lambda (paper: 0.001)"),
    "--gamma": ("loss.gamma", float, "relation-map gamma (paper: 0.01)"),
}
SWITCHES = {
    "channels_last": "channels-last memory format (default: on CUDA)",
    "sync_bn": "SyncBatchNorm under DDP (default: on)",
    "compile": "torch.compile the model",
    "deterministic": "deterministic algorithms (exact resume on GPUs too, slower)",
    "skip_bad_data": "skip and log bad dataset items instead of refusing to start",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", description="Train GiftNet (reconstruction branch, then harmonization branch)."
    )
    p.add_argument("--config", type=Path, default=S, help="JSON file of config fields (flags override it)")
    p.add_argument("--resume", type=Path, default=S, metavar="RUN", help="continue the run in this folder exactly")
    p.add_argument("--dry-run", action="store_true", help="validate config and data, print the plan, train nothing")
    p.add_argument("--ablation", type=int, default=S, metavar="ROW", help="model and loss of the paper's Table 3 row")
    for flag, (_, kind, help_) in FLAGS.items():
        if kind in ("list", "ints"):
            p.add_argument(flag, nargs="+", type=int if kind == "ints" else str, default=S, help=help_)
        else:
            p.add_argument(flag, type=kind, default=S, help=help_)
    for name, help_ in SWITCHES.items():
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, action=argparse.BooleanOptionalAction, default=S, help=help_
        )
    return p


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Profile < --config file (or the resumed run's config.json) < --ablation < flags."""
    given = vars(args)
    base: dict[str, Any] = {}
    if "resume" in given:
        saved = given["resume"] / "config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume {given['resume']}: no config.json there (not a run folder?)")
        try:
            base = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"--resume {given['resume']}: cannot read {saved} ({exc})") from exc
        if not isinstance(base, dict):
            raise ValueError(f"--resume {given['resume']}: {saved} must hold a JSON object")
        base["out"] = str(given["resume"])
    elif "config" in given:
        try:
            base = json.loads(given["config"].read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--config {given['config']}: cannot read JSON ({exc})") from exc
        if not isinstance(base, dict):
            raise ValueError(f"--config {given['config']}: must hold a JSON object")
    data_given = given.get("data", base.get("data"))
    merged: dict[str, Any] = {} if data_given is not None or "resume" in given else dict(DEMO_PROFILE)
    merged |= base
    model = dict(merged.pop("model", {}))
    loss = dict(merged.pop("loss", {}))
    if "ablation" in given:
        row = ablation(given["ablation"])
        model |= row.model.to_dict()
        loss |= row.loss.to_dict()
    for flag, (field, _, _) in FLAGS.items():
        dest = flag[2:].replace("-", "_")
        if dest in given:
            value = given[dest]
            target = model if field.startswith("model.") else loss if field.startswith("loss.") else merged
            target[field.split(".")[-1]] = value
    merged |= {k: given[k] for k in SWITCHES if k in given}
    merged["model"] = ModelConfig.from_dict(model)
    merged["loss"] = LossConfig.from_dict(loss)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(merged) - names)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}")
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})


def main(argv: list[str] | None = None) -> int:
    from giftnet.errors import UserError
    from giftnet.training.run import run
    from giftnet.weights import WeightsError
    from pipeline.pairs import DatasetError

    args = parser().parse_args(argv)
    try:
        cfg = resolve(args)
        return run(cfg, resume="resume" in vars(args), dry_run=args.dry_run)
    except UserError as exc:
        print(f"train.py: {'error' if exc.exit_code == 2 else 'stopped'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, TypeError, DatasetError, WeightsError, FileNotFoundError, FileExistsError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as exc:  # non-finite losses; a checkpoint that cannot be written
        print(f"train.py: stopped: {exc}", file=sys.stderr)
        return 1
