"""The run folder: every file a training run reads or writes, and the rules for them.

One object owns the names (checkpoints, exports, logs, samples), which checkpoint is the latest,
pruning, the temporaries a killed write leaves, the exclusive lock, and the repair and truncation
of the two append-only logs on resume. Every write goes through giftnet.fileio (atomic, or one
whole line per append).

Test hook: GIFTNET_TEST_HOOK="KIND:N:ACTION" (e.g. "best:1:kill") makes the process signal itself
(kill: SIGKILL, term: SIGTERM, int: SIGINT, int2: SIGINT twice) right after its N-th write of
KIND (see KINDS), or at the N-th "eval-start" / "checkpoint-writing" event. Inert unless set.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from giftnet.errors import DataError, UsageError
from giftnet.fileio import append_line, atomic_write_bytes, atomic_writer

STAGE_ORDER = ("reconstruction", "harmonization")
TEACHER_FILE, MODEL_FILE, BEST_FILE = "teacher.safetensors", "model.safetensors", "best-model.safetensors"
KINDS = ("config", "stats", "checkpoint", "teacher", "model", "best", "eval", "sample", "plot")
_CKPT = re.compile(r"^ckpt-(reconstruction|harmonization)-(\d{9})\.safetensors$")
LOCK_FILE = ".lock"


def checkpoint_name(stage: str, step: int) -> str:
    return f"ckpt-{stage}-{step:09d}.safetensors"


class _Hook:
    """The test hook of the module docstring."""

    def __init__(self) -> None:
        spec = os.environ.get("GIFTNET_TEST_HOOK", "")
        self.kind, self.n, self.action = [*spec.split(":"), "", ""][:3] if spec else ("", "0", "")
        self.seen = 0

    def __call__(self, kind: str) -> None:
        if kind != self.kind:
            return
        self.seen += 1
        if self.seen != int(self.n):
            return
        sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT, "int2": signal.SIGINT}
        os.kill(os.getpid(), sig[self.action])
        if self.action == "int2":
            os.kill(os.getpid(), signal.SIGINT)


class RunFolder:
    """The files of one run under `path`. Only the writer (rank 0) calls the methods that write."""

    def __init__(self, path: str | os.PathLike, log: Callable[[str], None] = print) -> None:
        self.path = Path(path)
        self.log = log
        self.hook = _Hook()
        self._lock_fd: int | None = None

    # --- names ------------------------------------------------------------------------------
    @property
    def stats(self) -> Path:
        return self.path / "stats.jsonl"

    @property
    def evals(self) -> Path:
        return self.path / "eval.jsonl"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def sample(self, step: int) -> Path:
        return self.path / "samples" / f"step{step:09d}.png"

    # --- the lock ---------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold an exclusive lock on the folder for the life of this process (released on exit,
        even by SIGKILL). A second trainer on the same folder gets UsageError naming our pid."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = self._acquire()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def check_unlocked(self) -> None:
        """UsageError naming the holder when another trainer holds the folder; changes nothing.
        (A probe that took the lock and wrote its pid could make the real holder's own lock fail.)"""
        fd = self._acquire()
        os.close(fd)  # releases the probe's flock; the file keeps the last holder's pid

    def _acquire(self) -> int:
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(
                f"{self.path} is in use by another trainer (pid {holder}); wait for it to end, or stop it "
                f"(kill -TERM {holder}: it saves a checkpoint) and then --resume {self.path}"
            ) from None
        return fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # --- checkpoints ------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, int, Path]]:
        """(stage index, step, path) of every checkpoint, oldest first."""
        found = []
        for p in self.path.glob("ckpt-*.safetensors"):
            m = _CKPT.match(p.name)
            if m:
                found.append((STAGE_ORDER.index(m.group(1)), int(m.group(2)), p))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][2] if found else None

    def write_checkpoint(self, stage: str, step: int, data: bytes, keep_last: int) -> Path:
        path = self.path / checkpoint_name(stage, step)
        with atomic_writer(path) as f:
            f.write(data)
            self.hook("checkpoint-writing")
        self.hook("checkpoint")
        mine = [p for s, _, p in self.checkpoints() if STAGE_ORDER[s] == stage]
        for p in mine[:-keep_last]:
            p.unlink(missing_ok=True)
        return path

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete what writes of a killed process left (never read; safe: we hold the lock)."""
        stale = sorted(p for p in self.path.glob(".*.tmp") if p.is_file())
        stale += sorted(p for p in self.path.glob("samples/.*.tmp") if p.is_file())
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    # --- other files ------------------------------------------------------------------------
    def write(self, kind: str, path: Path, data: bytes) -> None:
        """Write a whole file of `kind` (one of KINDS) atomically."""
        atomic_write_bytes(path, data)
        self.hook(kind)

    def write_config(self, config: dict[str, Any]) -> None:
        self.write("config", self.config, json.dumps(config, indent=2).encode())

    def export(self, kind: str, save: Callable[[Path], None], path: Path) -> None:
        """An export written by `save(path)` (giftnet.weights.save_weights writes atomically)."""
        save(path)
        self.hook(kind)

    def append(self, kind: str, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        append_line(self.stats if kind == "stats" else self.evals, json.dumps(record))
        self.hook(kind)

    @contextlib.contextmanager
    def png(self, kind: str, path: Path) -> Iterator[io.BytesIO]:
        """A buffer for an encoder that writes a PNG; its bytes then go to `path` atomically."""
        buf = io.BytesIO()
        yield buf
        self.write(kind, path, buf.getvalue())

    # --- the logs on resume -----------------------------------------------------------------
    def read_log(self, path: Path) -> list[dict[str, Any]]:
        """The records of an append-only log. A last line cut by a crash (no newline) is dropped
        from the file now; any other damaged line is refused, naming the file and the line."""
        if not path.exists():
            return []
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rsplit(b"\n", 1)
            data = cut[0] + b"\n" if len(cut) == 2 else b""
            atomic_write_bytes(path, data)
            self.log(f"{path}: removed a last line cut by an interrupted write")
        records = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise DataError(
                    f"{path}: line {number} is damaged ({line[:60]!r}); remove that line (or the file) and resume again"
                )
            records.append(rec)
        return records

    def truncate_logs(self, stats_upto: tuple[int, int], evals_upto: tuple[int, int]) -> None:
        """Keep the records at or before (stage index, step) of the checkpoint resumed from: a killed
        run wrote the rest after it, and the resumed run writes them again."""
        for path, upto in ((self.stats, stats_upto), (self.evals, evals_upto)):
            records = self.read_log(path)
            keep = [r for r in records if (STAGE_ORDER.index(r.get("stage", STAGE_ORDER[-1])), r["step"]) <= upto]
            if len(keep) < len(records):
                atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in keep).encode())
