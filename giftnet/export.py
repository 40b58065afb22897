"""Turn a training checkpoint into weights: `python -m giftnet.export RUN/ckpt-....safetensors --out W`.

A run killed at epoch 60 has checkpoints but no model.safetensors; this writes the weights that
evaluate and harmonize take, from a checkpoint file or from a run folder (its newest
checkpoint). The checkpoint of the reconstruction stage becomes teacher weights, that of the
harmonization stage model weights (the role is recorded). The model's tensors are checked like
any weights file's (names, shapes, finite values); the output is written atomically and never
onto the checkpoint it is read from.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from giftnet.errors import UsageError, WeightsError, run_cli
from giftnet.fileio import check_regular_file, refuse_overwrite_input
from giftnet.model import GiftNet
from giftnet.training.checkpoint import read_metadata
from giftnet.training.runfolder import RunFolder
from giftnet.weights import load_state_checked, parse_model_config, save_weights

ROLE_OF_STAGE = {"reconstruction": "teacher", "harmonization": "model"}


def find_checkpoint(source: Path) -> Path:
    """`source` itself, or the newest checkpoint of the run folder `source`."""
    if source.is_dir():
        newest = RunFolder(source).latest_checkpoint()
        if newest is None:
            raise UsageError(f"{source}: no ckpt-*.safetensors in this folder (is it a run folder?)")
        return newest
    return check_regular_file(source, "checkpoint")


def export_checkpoint(checkpoint: Path, out: Path) -> tuple[str, GiftNet]:
    """Write the model of `checkpoint` as weights to `out`; return its role and the model."""
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give the weights file to write")
    refuse_overwrite_input(out, [checkpoint], "--out")
    meta = read_metadata(checkpoint)
    role = ROLE_OF_STAGE.get(meta.get("stage", ""))
    if role is None:
        raise WeightsError(f"{checkpoint}: unknown stage {meta.get('stage')!r} in the checkpoint")
    model = GiftNet(parse_model_config(checkpoint, meta.get("model_config")), role=role)
    model.load_state_dict(load_state_checked(checkpoint, model.state_dict(), prefix="model."))
    save_weights(model, out, {"exported_from": checkpoint.name}, role=role)
    return role, model


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m giftnet.export", description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a ckpt-*.safetensors file, or a run folder (its newest checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="the weights file to write (.safetensors)")
    args = p.parse_args(argv)

    def body() -> int:
        checkpoint = find_checkpoint(args.source)
        role, _ = export_checkpoint(checkpoint, args.out)
        print(f"exported {checkpoint} -> {args.out} ({role} weights)")
        return 0

    return run_cli("giftnet.export", body)


if __name__ == "__main__":
    sys.exit(main())
