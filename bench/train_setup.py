"""The pieces of giftnet.bench.train: the five configurations, when one is skipped, and how one is built and timed.

`Setup` builds a configuration exactly as the trainer does (`Context`, `prepare`, `build_model`,
`build_teacher`, `make_optimizer`, `make_scaler`, `make_train_loader`) and times segments of
`train_step` calls with the GPU synchronised at both ends; `count_flops` counts one step's model
FLOPs with FlopCounterMode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path
from typing import TypedDict

import torch
from torch.utils.flop_counter import FlopCounterMode

from giftnet.bench.common import Timer, sync
from giftnet.choices import Backend, Impl, Precision
from giftnet.config import LossConfig, ModelConfig
from giftnet.model import build_model, build_teacher
from giftnet.pipeline import dali_loader
from giftnet.pipeline.loaders import make_train_loader
from giftnet.training.config import TrainConfig
from giftnet.training.loop import train_step
from giftnet.training.precision import cpu_supports, make_optimizer, make_scaler, resolve_precision
from giftnet.training.stage import Context, prepare


class _Spec(TypedDict):
    label: str
    mixed: bool  # mixed precision and channels_last
    impl: Impl
    backend: Backend


class Spec(_Spec, total=False):
    """One configuration of the benchmark."""

    compile: bool


CONFIGS: dict[str, Spec] = {
    "a": {"label": "fp32, reference ops, DataLoader+PIL", "mixed": False, "impl": "reference", "backend": "torch"},
    "b": {"label": "a + mixed precision, channels_last", "mixed": True, "impl": "reference", "backend": "torch"},
    "c": {"label": "b + Triton kernels", "mixed": True, "impl": "auto", "backend": "torch"},
    "d": {"label": "c + DALI pipeline (the engine)", "mixed": True, "impl": "auto", "backend": "dali"},
    "e": {"label": "d + torch.compile", "mixed": True, "impl": "auto", "backend": "dali", "compile": True},
}


@dataclasses.dataclass
class Plan:
    """Sizes of one benchmark run."""

    base_channels: int
    crop: int
    batch: int
    warmup: int
    steps: int
    rounds: int
    image_size: int
    workers: int

    @property
    def pairs_needed(self) -> int:
        """Enough for the longest segment (round 0 warms up 2 steps more), so no epoch ends inside one."""
        return self.batch * (self.warmup + 2 + self.steps)


def mixed_precision(device: torch.device) -> tuple[Precision | None, str]:
    """(precision of rows b-e, or None when none works here; a note)."""
    if device.type == "cuda":
        p = resolve_precision("auto", device)
        return p, "" if p == "bf16" else "this GPU has no bf16: fp16 with a dynamic grad scaler"
    candidates: tuple[Precision, ...] = ("bf16", "fp16")
    for p in candidates:
        if cpu_supports(p):
            return p, f"CPU autocast in {p}"
    return None, "CPU autocast supports neither bf16 nor fp16 in this torch build"


def skip_reason(key: str, device: torch.device, precision: str | None) -> str | None:
    """Why configuration `key` cannot run here (None: it runs)."""
    spec = CONFIGS[key]
    if spec["mixed"] and precision is None:
        return "no mixed precision: " + mixed_precision(device)[1]
    if device.type != "cuda" and key == "c":
        return (
            "needs CUDA: the Triton kernels run on GPUs only (impl 'auto' falls back to the reference ops on the CPU)"
        )
    if device.type != "cuda" and key == "e":
        return "needs CUDA: torch.compile is measured on the GPU only (on the CPU it times C++ code generation)"
    if key == "d" and dali_loader.DALI_IMPORT_ERROR is not None:
        return f"DALI not importable: {dali_loader.DALI_IMPORT_ERROR}"
    return None


class Setup:
    """One configuration's model, teacher, optimizer, scaler and loader, built as the trainer builds them."""

    def __init__(self, key: str, plan: Plan, pairs: list, device: torch.device, precision: Precision) -> None:
        spec = CONFIGS[key]
        self.key, self.spec, self.plan, self.device = key, spec, plan, device
        backend = spec["backend"]
        if backend == "dali" and dali_loader.DALI_IMPORT_ERROR is not None:
            backend = "torch"  # only row e gets here: it says so in its note
        impl = spec["impl"]
        cfg = TrainConfig(
            precision=precision if spec["mixed"] else "fp32",
            channels_last=spec["mixed"],
            batch_size=plan.batch,
            crop_size=plan.crop,
            workers=plan.workers,
            backend=backend,
            compile=bool(spec.get("compile")),
            model=ModelConfig(base_channels=plan.base_channels, modconv_impl=impl),
            loss=LossConfig(relation_impl=impl),
        )
        self.backend, self.precision = backend, cfg.precision
        self.ctx = Context(cfg, device)
        torch.manual_seed(0)  # every configuration starts from the same weights
        self.model = prepare(self.ctx, build_model(cfg.model)).train()
        self.teacher = prepare(self.ctx, build_teacher(cfg.model)).eval().requires_grad_(False)
        self.optimizer = make_optimizer(self.model.parameters(), cfg.lr, cfg.optimizer, device)
        self.scaler = make_scaler(self.ctx.precision, device)
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        self.loss_cfg = cfg.loss
        self.loader = make_train_loader(
            pairs,
            batch_size=plan.batch,
            crop_size=plan.crop,
            seed=0,
            num_workers=plan.workers,
            device=device,
            backend=backend,
        )
        self.seconds, self.images, self.warmup_s, self.peak = 0.0, 0, 0.0, 0.0
        self.round_ips: list[float] = []
        self.loss: float | None = None

    def resident_bytes(self) -> int:
        """Weights, buffers and optimizer state of this configuration (student and teacher)."""
        tensors = [*self.model.state_dict().values(), *self.teacher.state_dict().values()]
        tensors += [v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors if t.device.type == self.device.type)

    def batches(self, epoch: int) -> Generator[dict[str, torch.Tensor], None, None]:
        """Batches from the start of `epoch`, running on into later epochs when one is too short."""
        while True:
            yield from self.loader.epoch(epoch)
            epoch += 1

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return train_step(self.ctx, self.step_model, self.teacher, batch, self.loss_cfg, self.optimizer, self.scaler)

    def segment(self, epoch: int, warmup: int) -> None:
        """`warmup` untimed steps, then plan.steps timed ones (data loading included)."""
        it = self.batches(epoch)
        try:
            with Timer(self.device) as t:
                for _ in range(warmup):
                    self.step(next(it))
            self.warmup_s = max(self.warmup_s, t.seconds)
            cuda = self.device.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
                base = torch.cuda.memory_allocated(self.device)
            with Timer(self.device) as t:
                for _ in range(self.plan.steps):
                    parts = self.step(next(it))
            if cuda:
                peak = torch.cuda.max_memory_allocated(self.device) - base + self.resident_bytes()
                self.peak = max(self.peak, peak)
        finally:
            it.close()  # stops DataLoader workers / the DALI pipeline of this segment
        images = self.plan.steps * self.plan.batch
        self.seconds += t.seconds
        self.images += images
        self.round_ips.append(round(images / t.seconds, 2))
        self.loss = float(parts["total"])


def count_flops(setup: Setup) -> int:
    """Model FLOPs of one training step (student fwd + bwd, teacher fwd) on one batch: counted, not guessed."""
    batch = next(setup.batches(0))
    with FlopCounterMode(display=False) as counter:
        setup.step(batch)
    sync(setup.device)
    return counter.get_total_flops()


def load_pairs(plan: Plan, data: Path | None, cache: Path) -> tuple[list, str]:
    """Training pairs from an iHarmony4 root, or the demo dataset built into `cache` (reused when built)."""
    from giftnet.pipeline.ihd import read_pairs

    if data is not None:
        pairs = read_pairs(data, None, "train")
        if len(pairs) < plan.batch:
            raise ValueError(f"--data {data}: {len(pairs)} training pairs, fewer than one batch of {plan.batch}")
        return pairs[: plan.pairs_needed], str(data)
    n = plan.pairs_needed
    try:
        from giftnet.pipeline.builders.synth import build_demo_dataset
    except ImportError as err:  # scikit-image missing (a bare GPU machine): plain synthetic JPEGs
        from giftnet.bench.data import make_triplets

        folder = cache / f"triplets-{plan.image_size}px-{n}"
        return make_triplets(folder, n, min_side=plan.image_size, max_side=plan.image_size * 3 // 2), (
            f"synthetic JPEG triplets ({err})"
        )
    root = build_demo_dataset(cache / f"demo-{plan.image_size}px-{n}", n_train=n, n_test=0, size=plan.image_size)
    return read_pairs(
        root, None, "train"
    ), f"demo dataset (giftnet.pipeline.builders.synth, short side {plan.image_size} px)"
