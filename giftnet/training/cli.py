"""Command line of train.py, generated from the config dataclasses: one flag per field.

TrainConfig, ModelConfig and LossConfig declare each field's type (choices as `Literal`) and
help once (giftnet.fields); this module only adds the few flags that are not config fields
(--config, --resume, --dry-run, --ablation) and the precedence of the sources.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path
from typing import Any

from giftnet.ablations import ablation
from giftnet.config import LossConfig, ModelConfig
from giftnet.errors import UsageError, run_cli
from giftnet.fields import add_arguments, from_dict
from giftnet.fileio import check_regular_file
from giftnet.training.config import DEMO_PROFILE, TrainConfig

S = argparse.SUPPRESS
SECTIONS = {"model": ModelConfig, "loss": LossConfig}  # nested configs: dest "model.x", "loss.x"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", description="Train GiftNet (reconstruction branch, then harmonization branch)."
    )
    p.add_argument("--config", type=Path, default=S, help="JSON file of config fields (flags override it)")
    p.add_argument("--resume", type=Path, default=S, metavar="RUN", help="continue the run in this folder exactly")
    p.add_argument("--dry-run", action="store_true", help="check config, devices, weights and data; train nothing")
    p.add_argument(
        "--ablation",
        type=int,
        default=S,
        metavar="ROW",
        help="GIFT sites, guidance and distillation of the paper's Table 3 row",
    )
    add_arguments(p.add_argument_group("training run"), TrainConfig)
    add_arguments(p.add_argument_group("model (stored in the weights)"), ModelConfig, "model.")
    add_arguments(p.add_argument_group("loss"), LossConfig, "loss.")
    return p


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`; UsageError naming `what` (the flag and file) otherwise."""
    check_regular_file(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{what} {path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path}: must hold a JSON object")
    return data


def base_config(given: dict[str, Any]) -> dict[str, Any]:
    """The config file's fields (or the resumed run's), type-checked and naming the file."""
    if "resume" in given and "config" in given:
        raise UsageError("--config cannot be used with --resume: a resumed run reads its own config.json")
    if "resume" in given:
        run = given["resume"]
        saved = run / "config.json"
        if not saved.exists():
            raise UsageError(f"--resume {run}: no config.json there (not a run folder?)")
        where = f"--resume {run}: {saved}"
        base = read_json_object(saved, f"--resume {run}:")
        base["out"] = str(run)
    elif "config" in given:
        where = f"--config {given['config']}"
        base = read_json_object(given["config"], "--config")
    else:
        return {}
    # Check every field's type now, naming the file, before anything else is merged in.
    from_dict(TrainConfig, base | {"model": ModelConfig().to_dict(), "loss": LossConfig().to_dict()}, where)
    for name, cls in SECTIONS.items():
        if name in base:
            from_dict(cls, base[name], where, prefix=f"{name}.")
    return base


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Profile < --config file (or the resumed run's config.json) < --ablation < flags."""
    given = vars(args)
    base = base_config(given)
    data_given = given.get("data", base.get("data"))
    merged: dict[str, Any] = {} if data_given is not None or "resume" in given else dict(DEMO_PROFILE)
    merged |= base
    sections = {name: dict(merged.pop(name, {})) for name in SECTIONS}
    if "ablation" in given:
        model, loss = ablation(given["ablation"]).overrides()
        sections["model"] |= model
        sections["loss"] |= loss
    for dest, value in given.items():
        head, _, field = dest.partition(".")
        if field and head in SECTIONS:
            sections[head][field] = value
        elif dest not in ("config", "resume", "dry_run", "ablation"):
            merged[dest] = value
    merged |= sections
    return from_dict(TrainConfig, merged)


def main(argv: list[str] | None = None) -> int:
    """train.py: a user's mistake is a message and exit 2; a bug raises with its traceback."""
    args = parser().parse_args(argv)

    def body() -> int:
        from giftnet.training.run import run

        cfg = resolve(args)
        try:
            return run(cfg, resume="resume" in vars(args), dry_run=args.dry_run)
        except FloatingPointError as exc:  # the trainer's stop after max_bad_steps non-finite losses
            print(f"train.py: stopped: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            print(f"train.py: stopped: the disk is full ({exc}); free space and pass --resume", file=sys.stderr)
            return 1

    return run_cli("train.py", body)
