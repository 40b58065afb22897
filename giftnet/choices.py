"""The closed sets of choices of the configs and command lines, each written once.

Each set is a `Literal` type (the config dataclasses annotate their fields with it, and the
command line takes its `choices` from it) and a tuple of its values for messages and checks.
This module imports nothing from the project, so the data pipeline can use it too.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

Backend = Literal["auto", "dali", "torch"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]
Optimizer = Literal["adam", "apex", "sgd"]
Stage = Literal["all", "reconstruction", "harmonization"]
Impl = Literal["auto", "reference", "triton"]
Site = Literal["E1", "E2", "E3", "E4", "D1", "D2", "D3"]
Guidance = Literal["global", "none", "self"]
HarmonizationLoss = Literal["l1", "fn_mse"]
Distill = Literal["relation", "feature", "none"]
# Where the harmonization branch starts: random init (paper) or the trained reconstruction branch.
StudentInit = Literal["scratch", "teacher"]
# What a weights file is: the harmonization network ("model") or the reconstruction branch that
# distillation uses as its teacher ("teacher"); the two must not be confused at evaluation.
Role = Literal["model", "teacher"]

BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISIONS: tuple[str, ...] = get_args(Precision)
FIXED_PRECISIONS: tuple[str, ...] = tuple(p for p in PRECISIONS if p != "auto")  # evaluate/harmonize: no "auto"
DEVICES: tuple[str, ...] = get_args(Device)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
STAGES: tuple[str, ...] = get_args(Stage)
IMPLS: tuple[str, ...] = get_args(Impl)
ROLES: tuple[str, ...] = get_args(Role)
STUDENT_INITS: tuple[str, ...] = get_args(StudentInit)

# The autocast dtype of each fixed precision (None: no autocast). "auto" is resolved per device.
PRECISION_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
