"""torchrun --max-restarts: a worker SIGKILLed mid-run, the group restarts, and no weight differs.

The elastic agent starts the same command line again with TORCHELASTIC_RESTART_COUNT > 0; the
trainer then continues from the newest complete checkpoint with no flag. Three kills are tried:
rank 1 at a random step, rank 0 (the only writer) at a random step, and rank 0 while a checkpoint
temporary is written but not yet renamed. Each ends bit-identical to an uninterrupted 2-rank run,
after one restart (--max-restarts 1). First, the restart itself: a group whose ranks come back at
different times must meet in a fresh key space (giftnet.training.distributed.attempt_store)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from giftnet.training.runfolder import STAGE_ORDER, RunFolder
from tests.train_helpers import ENV as HELPER_ENV
from tests.train_helpers import ROOT, free_port

ENV = HELPER_ENV | {"GLOO_SOCKET_IFNAME": "lo", "TP_SOCKET_IFNAME": "lo"}  # sockets on the loopback only


def torchrun(script: list[str], restarts: int, rdzv: str = "c10d") -> list[str]:
    """torchrun with 2 workers on this machine; rdzv "c10d" (elastic jobs) or "static" (a fixed master)."""
    port = f"{free_port()}"
    meet = (
        ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        if rdzv == "c10d"
        else ["--master-addr", "127.0.0.1", "--master-port", port]
    )
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", str(restarts),
        "--monitor-interval", "0.2", *meet, "--local-addr", "127.0.0.1", *script,
    ]  # fmt: skip


def train(data: Path, out: Path) -> list[str]:
    return [
        str(ROOT / "train.py"), "--data", str(data), "--out", str(out), "--epochs", "2", "--teacher-epochs", "1",
        "--batch-size", "4", "--crop-size", "32", "--eval-size", "32", "--base-channels", "8", "--log-every", "1",
        "--ckpt-every", "1", "--backend", "torch", "--workers", "0", "--eval-every", "0",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("rdzv", ["c10d", "static"])
def test_restarted_group_meets_though_one_rank_is_late(rdzv):
    """The cause of the flaky restarts, provoked: the agent's store outlives a dead group, and
    without a key prefix per attempt the early rank of a restarted group read the late rank's old
    gloo address ("connectFullMesh ... Connection refused", or a hang). Before the fix this failed
    in most runs, for either backend and either late rank; tests/elastic_rejoin_worker.py says how."""
    cmd = torchrun([str(ROOT / "tests" / "elastic_rejoin_worker.py")], 2, rdzv)
    done = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=180)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-4000:]
    for attempt in (1, 2):
        for r in (0, 1):
            want = f"attempt {attempt} rank {r}: joined, mean 1.5, agreed ['ok{attempt}', 'ok{attempt}']"
            assert want in text, text[-4000:]


def workers(agent: int) -> dict[int, int]:
    """{global rank: pid} of the agent's live training workers (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid != agent:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def steps_logged(out: Path) -> int:
    try:
        return len((out / "stats.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    done = subprocess.run(torchrun(train(tiny_data, out), 0), env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def newest_checkpoint(out: Path) -> tuple[int, int]:
    """(stage index, step) of the newest complete checkpoint; (-1, 0) when there is none."""
    found = RunFolder(out).checkpoints()
    return found[-1][:2] if found else (-1, 0)


def resumed_from(text: str) -> tuple[int, int]:
    """(stage index, step) of the checkpoint the restarted run says it resumed from; (-1, 0) if none."""
    found = re.findall(r"resumed \w+ from (ckpt-\S+\.safetensors)", text)
    assert len(found) <= 1, found  # one restart: at most one resume
    if not found:
        return (-1, 0)
    stage, step = re.fullmatch(r"ckpt-(\w+)-(\d+)\.safetensors", found[0]).groups()  # type: ignore[union-attr]
    return (STAGE_ORDER.index(stage), int(step))


def kill_when(agent: subprocess.Popen, ready, rank: int, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert agent.poll() is None, "the run ended before the kill"
        if ready():
            pid = workers(agent.pid).get(rank)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return
        time.sleep(0.005)
    pytest.fail("the moment to kill never came")


# case: (rank to kill, steps logged before the kill (a random one in a range), extra environment)
CASES = {
    # rank 1 at a random step of the harmonization stage (the run logs 12 steps: 4 + 8)
    "rank1-random-step": (1, (5, 11), {}),
    # rank 0, the only writer of checkpoints and logs, at a random step of either stage
    "rank0": (0, (1, 11), {}),
    # rank 0 while a checkpoint's temporary is complete but not yet renamed over its name
    "during-checkpoint-write": (0, (3, 3), {"GIFTNET_TEST_WRITE_DELAY_S": "0.3"}),
}
# The random kill step; GIFTNET_ELASTIC_SEED=N repeats a run (the seed is in every failure).
SEED = int(os.environ.get("GIFTNET_ELASTIC_SEED", random.randrange(10**6)))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_killed_worker_restarts_and_ends_bit_identical(tiny_data, uninterrupted, tmp_path, case):
    rank, (low, high), env = CASES[case]
    out, log = tmp_path / "run", tmp_path / "torchrun.log"
    at = random.Random(f"{SEED}/{case}").randint(low, high)
    where = f"{case}: SIGKILL of rank {rank} after {at} logged steps (GIFTNET_ELASTIC_SEED={SEED})"
    print(where)
    if "GIFTNET_TEST_WRITE_DELAY_S" in env:

        def ready() -> bool:
            return steps_logged(out) >= at and any(out.glob(".ckpt-*.tmp"))
    else:

        def ready() -> bool:
            return steps_logged(out) >= at

    with log.open("w") as sink:
        # One restart allowed: the first restart must resume (a second kill would fail the run).
        agent = subprocess.Popen(torchrun(train(tiny_data, out), 1), env=ENV | env, cwd=ROOT, stdout=sink,
                                 stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            kill_when(agent, ready, rank)
            time.sleep(0.5)  # a killed rank 0 writes nothing more: what is there now is final
            newest_at_kill = newest_checkpoint(out)
            agent.wait(timeout=240)
        finally:
            if agent.poll() is None:
                agent.kill()
    text = log.read_text()
    assert agent.returncode == 0, f"{where}\n{text[-4000:]}"
    assert "torchrun restart 1: continuing from the newest checkpoint" in text, f"{where}\n{text[-4000:]}"
    # The restart resumes from the newest complete checkpoint: the one there at the kill when rank 0
    # (the only writer) died; a surviving rank 0 may have finished one more before it was stopped.
    resumed = resumed_from(text[text.index("torchrun restart 1") :])
    print(f"{where}: newest complete checkpoint at the kill {newest_at_kill}, resumed from {resumed}")
    assert resumed == newest_at_kill if rank == 0 else resumed >= newest_at_kill, (where, resumed, newest_at_kill)
    if "GIFTNET_TEST_WRITE_DELAY_S" in env:  # the cut write is cleaned, the checkpoint before it used
        assert re.search(r"removed \.ckpt-\S+\.tmp, left by a write that was interrupted", text), text[-4000:]
    assert not list(out.glob(".*.tmp")), where
    for name in ("teacher.safetensors", "model.safetensors"):
        a, b = load_file(uninterrupted / name), load_file(out / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{where}: {name} {k} differs from the uninterrupted run"
    # no step is logged twice: the restarted run truncates the log to its checkpoint
    assert steps_logged(out) == steps_logged(uninterrupted), where
