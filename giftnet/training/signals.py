"""SIGINT/SIGTERM during training: finish the step, save a checkpoint, exit 128+N; resumable.

During an evaluation (nothing there is training state) a signal stops at once. A second Ctrl-C
aborts at once, except while a checkpoint is being written: then it waits for the write, so the
old checkpoint (or the new one) is intact and no traceback comes from inside the writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections.abc import Iterator


class StopRequested(Exception):
    """A signal arrived; a checkpoint was saved (or the last one is current)."""

    def __init__(self, signum: int | None, message: str) -> None:
        super().__init__(message)
        self.signum = signum or signal.SIGINT


class Aborted(KeyboardInterrupt):
    """A second Ctrl-C: stop now, without a new checkpoint."""


@dataclasses.dataclass
class Signals:
    stop_signal: int | None = None  # the first SIGINT/SIGTERM
    interruptible: bool = False  # an evaluation runs: stop at once
    writing: bool = False  # a checkpoint is being written: a second Ctrl-C waits
    abort_pending: bool = False

    def handler(self, signum: int, frame: object) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:
            if self.writing:
                self.abort_pending = True
                return
            raise Aborted
        if self.stop_signal is None:
            self.stop_signal = signum
        if self.interruptible:
            self.interruptible = False
            raise StopRequested(signum, "stopped during the evaluation")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """A block with no training state in it: a signal raises StopRequested at once."""
        if self.stop_signal is not None:
            raise StopRequested(self.stop_signal, "stopped before the evaluation")
        self.interruptible = True
        try:
            yield
        finally:
            self.interruptible = False

    @contextlib.contextmanager
    def uninterrupted(self) -> Iterator[None]:
        """A block a second Ctrl-C must not cut (a checkpoint write)."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.abort_pending:
            raise Aborted
