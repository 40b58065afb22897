"""The glibc allocator settings of giftnet.allocator, measured side by side on the CPU.

Each workload runs in a fresh process per setting (malloc settings are per process), settings
alternating in rounds so a loaded machine slows each alike:

    default   glibc as it is (GIFTNET_MALLOC=default);
    tuned     giftnet.allocator: no per-block mmap, no trimming (what the entry points apply).

Workloads: `step`, full GiftNet training steps (teacher forward, student forward and backward,
relation distillation, Adam) at 256x256, batch 4, fp32; `evaluate`, `python -m giftnet.evaluate`
on 32 synthesized 256 px pairs with a fresh full model. Reported: wall seconds of the timed part,
and the process's user and sys CPU seconds (sys is where page faults go).

    python -m giftnet.bench.malloc [--rounds 2] [--steps 4] [--out bench/results/malloc.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ("default", "tuned")


def _step_child(steps: int) -> dict:
    import torch

    from giftnet.allocator import configure_allocator
    from giftnet.config import LossConfig, ModelConfig
    from giftnet.losses import total_loss
    from giftnet.model import build_model, build_teacher

    applied = configure_allocator()
    torch.manual_seed(0)
    model, teacher = build_model(ModelConfig()), build_teacher(ModelConfig()).eval()
    loss_cfg = LossConfig(distill="relation")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, real = torch.randn(4, 3, 256, 256), torch.randn(4, 3, 256, 256)
    mask = (torch.rand(4, 1, 256, 256) > 0.5).float()

    def step() -> None:
        with torch.no_grad():
            t = teacher(real, mask)
        total_loss(model(x, mask), real, mask, loss_cfg, t)["total"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {"applied": applied, "wall_s": wall / steps, "user_s": (r1.ru_utime - r0.ru_utime) / steps,
            "sys_s": (r1.ru_stime - r0.ru_stime) / steps, "unit": "s/step"}  # fmt: skip


def _eval_run(data: Path, weights: Path, setting: str) -> dict:
    env = dict(os.environ, GIFTNET_MALLOC=setting)
    cmd = [sys.executable, "-m", "giftnet.evaluate", "--data", str(data), "--weights", str(weights)]
    cmd += ["--no-progress", "--batch-size", "8", "--workers", "0", "--backend", "torch"]
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime, "unit": "s/run"}


def _step_run(steps: int, setting: str) -> dict:
    env = dict(os.environ, GIFTNET_MALLOC=setting)
    out = subprocess.run(
        [sys.executable, "-m", "giftnet.bench.malloc", "--child-steps", str(steps)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fixtures(tmp: Path) -> tuple[Path, Path]:
    from giftnet.config import ModelConfig
    from giftnet.model import build_model
    from giftnet.pipeline.builders.synth import build_demo_dataset
    from giftnet.weights import save_weights

    data = build_demo_dataset(tmp / "data", n_train=1, n_test=32, size=256, seed=0)
    weights = tmp / "model.safetensors"
    save_weights(build_model(ModelConfig()), weights)
    return data, weights


def torch_version() -> str:
    import torch

    return torch.__version__


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m giftnet.bench.malloc", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("bench/results/malloc.md"))
    p.add_argument("--child-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_steps is not None:
        print(json.dumps(_step_child(args.child_steps)))
        return 0
    from giftnet.bench.common import cpu_name, git_revision, utc_date
    from giftnet.fileio import atomic_write_text

    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data, weights = _fixtures(Path(tmp))
        for r in range(args.rounds):
            order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
            for setting in order:
                results.setdefault(("step", setting), []).append(_step_run(args.steps, setting))
                results.setdefault(("evaluate", setting), []).append(_eval_run(data, weights, setting))
                print(setting, json.dumps({k[0]: v[-1] for k, v in results.items() if k[1] == setting}), flush=True)
    load_after = os.getloadavg()
    info = {"cpu": cpu_name(), "cores": os.cpu_count()}
    lines = [
        "# glibc allocator settings (giftnet/allocator.py), side by side",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {torch_version()}; git {git_revision()}; {utc_date()}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (2 cores shared with other jobs). "
        f"{args.rounds} rounds, settings alternating; `python -m giftnet.bench.malloc --rounds {args.rounds} --steps {args.steps}`.",
        "",
        "| workload | setting | wall | user CPU | sys CPU | wall speed-up | CPU-time speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for work in ("step", "evaluate"):
        base = _mean(results[(work, "default")], "wall_s")
        for setting in SETTINGS:
            rows = results[(work, setting)]
            unit = rows[0]["unit"]
            wall, user, sys_ = (_mean(rows, k) for k in ("wall_s", "user_s", "sys_s"))
            lines.append(
                f"| {work} | {setting} | {wall:.2f} {unit} | {user:.2f} s | {sys_:.2f} s | {base / wall:.2f}x |"
            )
    lines += [
        "",
        "step: full GiftNet training step (teacher forward, student forward + backward, relation distillation, "
        "Adam), 256x256, batch 4, fp32, random tensors, one process per measurement, 1 warm-up step. "
        "evaluate: `python -m giftnet.evaluate` on 32 synthesized 256 px pairs, whole process (start-up included).",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
