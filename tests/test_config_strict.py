"""The one strict config loader and the command line generated from the config dataclasses.

A config file with a value of the wrong type is refused before anything runs, naming the field
and the file; every flag train.py ever had still parses; each flag's help and choices come from
the dataclass field (issue 11 "--config JSON with wrong types", issue 12 item 3).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import typing
from pathlib import Path

import pytest

from giftnet.choices import BACKENDS, PRECISIONS
from giftnet.config import LossConfig, ModelConfig
from giftnet.errors import ConfigError, UsageError
from giftnet.fields import config_fields, flag_of, from_dict
from giftnet.training.cli import parser, resolve
from giftnet.training.config import TrainConfig
from tests.train_helpers import run_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"epochs": True}, "field 'epochs' must be an integer, got true"),
        ({"seed": 1.5}, "field 'seed' must be an integer, got 1.5"),
        ({"lr": "0.001"}, "field 'lr' must be a number, got \"0.001\""),
        ({"subsets": "HSynth"}, "field 'subsets' must be a list of (a string)"),
        ({"subsets": [1]}, "field 'subsets' must be a list of (a string)"),
        ({"demo_pairs": [8]}, "field 'demo_pairs' must be a list of 2 values"),
        ({"teacher_epochs": "2"}, "field 'teacher_epochs' must be an integer or null"),
        ({"compile": 1}, "field 'compile' must be true or false, got 1"),
        ({"device": "mps"}, 'field \'device\' must be one of "auto", "cpu", "cuda"'),
        ({"precision": "fp8"}, "field 'precision' must be one of"),
        ({"data": 3}, "field 'data' must be a string or null"),
        ({"model": 3}, "model must be a JSON object, got int"),
        ({"model": {"base_channels": "32"}}, "field 'model.base_channels' must be an integer"),
        ({"model": {"base_channels": True}}, "field 'model.base_channels' must be an integer, got true"),
        ({"model": {"gift_sites": "E1"}}, "field 'model.gift_sites' must be a list of"),
        ({"model": {"gift_sites": ["E9"]}}, "field 'model.gift_sites' must be a list of"),
        ({"model": {"base_channels": 2048}}, "model.base_channels (--base-channels): must be a multiple of 8"),
        ({"model": {"widht": 8}}, "unknown field(s) ['model.widht']"),
        ({"loss": {"distill_sites": "E1"}}, "field 'loss.distill_sites' must be a list of"),
        ({"loss": {"gamma": "0.01"}}, "field 'loss.gamma' must be a number"),
        ({"loss": {"distill": True}}, "field 'loss.distill' must be one of"),
        ({"lr": 10**400}, "field 'lr' must be a number"),
        ({"epochs": 0}, "--epochs must be >= 1"),
    ],
)
def test_config_file_with_a_wrong_value_is_refused_naming_field_and_file(tmp_path, capsys, content, message):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(content))
    code, err = run_main(["--config", str(config), "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "r")],
                         capsys)  # fmt: skip
    assert code == 2, err
    assert message in err and str(config) in err, err
    assert not (tmp_path / "r").exists()


def test_resumed_config_json_is_loaded_as_strictly(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(data=str(tmp_path)).to_dict()
    (run / "config.json").write_text(json.dumps(saved | {"batch_size": "16"}))
    code, err = run_main(["--resume", str(run)], capsys)
    assert code == 2 and "field 'batch_size' must be an integer" in err and str(run / "config.json") in err, err


def test_config_and_resume_together_are_refused(tmp_path, capsys):
    (tmp_path / "c.json").write_text("{}")
    code, err = run_main(["--resume", str(tmp_path), "--config", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "--config cannot be used with --resume" in err


def test_valid_json_values_are_accepted_with_their_types(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lr": 1, "subsets": ["A", "B"], "milestones": [3], "model": {"gift_sites": ["D3"]}}))
    cfg = resolve(parser().parse_args(["--config", str(config), "--data", "x"]))
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.subsets == ("A", "B") and cfg.milestones == (3,) and cfg.model.gift_sites == ("D3",)


def test_precedence_profile_file_ablation_flags(tmp_path):
    config = tmp_path / "c.json"
    model = {"base_channels": 16, "gift_init_noise": 0.5, "gift_sites": ["E1"]}
    loss = {"harmonization": "fn_mse", "distill": "feature", "distill_weight": 0.5}
    config.write_text(json.dumps({"epochs": 5, "lr": 0.5, "model": model, "loss": loss}))
    argv = ["--config", str(config), "--data", "x", "--epochs", "7", "--ablation", "2", "--guidance", "self"]
    cfg = resolve(parser().parse_args(argv))
    assert cfg.epochs == 7 and cfg.lr == 0.5  # flag over file; file over default
    assert cfg.model.gift_sites == ("D3",) and cfg.model.guidance == "self"  # ablation row, then the flag
    assert cfg.loss.distill == "none" and cfg.loss.distill_sites == ()  # the row: no distillation
    # what does not define a row stays as the file set it
    assert (cfg.model.base_channels, cfg.model.gift_init_noise) == (16, 0.5)
    assert (cfg.loss.harmonization, cfg.loss.distill_weight) == ("fn_mse", 0.5)
    demo = resolve(parser().parse_args([]))
    assert demo.out == "runs/demo" and demo.data is None  # no --data: the demo profile


def test_one_loader_round_trips_every_config():
    cfg = TrainConfig(
        data="d", subsets=("A",), milestones=(2, 3), model=ModelConfig(gift_sites=("D3",)), loss=LossConfig(gamma=0.5)
    )
    assert from_dict(TrainConfig, json.loads(json.dumps(cfg.to_dict()))) == cfg
    for sub in (ModelConfig(guidance="none"), LossConfig(distill="feature")):
        assert from_dict(type(sub), json.loads(json.dumps(sub.to_dict()))) == sub
    with pytest.raises(ConfigError, match="field 'gamma' must be a number"):
        LossConfig.from_dict({"gamma": "x"})
    assert issubclass(ConfigError, UsageError) and issubclass(ConfigError, ValueError)


CLASSES = [(TrainConfig, ""), (ModelConfig, "model."), (LossConfig, "loss.")]


def test_every_config_field_is_a_flag_with_its_help_and_choices():
    actions = {a.dest: a for a in parser()._actions}
    for cls, prefix in CLASSES:
        for f, tp in config_fields(cls):
            action = actions[prefix + f.name]
            assert flag_of(f) in action.option_strings
            assert action.help == f.metadata["help"] and action.help
            arms = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            if typing.get_origin(arms[0]) is typing.Literal:
                assert tuple(action.choices) == typing.get_args(arms[0])
    nested = {f.name for f in dataclasses.fields(TrainConfig) if "help" not in f.metadata}
    assert nested == {"model", "loss"}


# Every flag train.py had before its command line was generated from the configs.
OLD_FLAGS = """--config --resume --dry-run --ablation --data --subsets --out --stage --epochs --teacher-epochs
--milestones --lr --batch-size --crop-size --eval-size --eval-batch-size --eval-every --precision --device
--optimizer --seed --workers --backend --init-weights --teacher-weights --log-every --ckpt-every --keep-last
--max-bad-steps --demo-pairs --demo-size --gift-sites --guidance --base-channels --loss --distill
--distill-sites --distill-weight --gamma --channels-last --no-channels-last --sync-bn --no-sync-bn --compile
--no-compile --deterministic --no-deterministic --skip-bad-data --no-skip-bad-data""".split()  # noqa: SIM905


def test_every_old_flag_still_exists_and_help_is_readable():
    options = {s for a in parser()._actions for s in a.option_strings}
    assert set(OLD_FLAGS) <= options
    text = parser().format_help()
    assert "MODEL." not in text and "LOSS." not in text  # short metavars
    assert "{auto,fp32,bf16,fp16}" in text and "{auto,dali,torch}" in text
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16") and BACKENDS == ("auto", "dali", "torch")


def readme_train_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        m = re.search(r"\btrain\.py((?:\s+--?\S+(?:\s+[^-\s#`]\S*)*)*)", line)
        if m and ("python" in line or "torchrun" in line) and "`" not in line:  # commands, not prose
            commands.append(shlex.split(m.group(1)))
    return commands


def test_the_readme_train_commands_parse_and_resolve(tmp_path):
    commands = readme_train_commands()
    assert len(commands) >= 5 and [] in commands, commands  # the demo command has no flags
    for argv in commands:
        if "--resume" in argv:
            run = tmp_path / "run"
            run.mkdir(exist_ok=True)
            (run / "config.json").write_text(json.dumps(TrainConfig(data="/data/x").to_dict()))
            argv = ["--resume", str(run)]
        cfg = resolve(parser().parse_args(argv))
        assert isinstance(cfg, TrainConfig)
