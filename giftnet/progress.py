"""Progress of a long loop over images: a rich bar on a terminal, plain timestamped lines elsewhere.

Cluster logs (SLURM, `> log`) cannot show a bar: there a line `TIME  WHAT DONE/TOTAL  R img/s
eta H:MM:SS` is printed after the first batch, then at most every `every_s` seconds, and at the
end, so a log shows that an evaluation is alive and when it will finish.
"""

from __future__ import annotations

import contextlib
import datetime
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

DEFAULT_EVERY_S = 30.0


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.1f} img/s", style="progress.data.speed")


class PlainProgress:
    """`advance(n)` prints a timestamped line after the first call, every `every_s` seconds and at the end."""

    def __init__(
        self,
        total: int,
        description: str,
        *,
        every_s: float = DEFAULT_EVERY_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.description, self.every_s = total, description, every_s
        self.stream, self.clock = stream, clock
        self.done = 0
        self.start = clock()
        self.last_print: float | None = None

    def __call__(self, n: int) -> None:
        self.done += n
        now = self.clock()
        due = self.last_print is None or now - self.last_print >= self.every_s
        if due or self.done >= self.total:
            self.last_print = now
            print(self.line(now), file=self.stream or sys.stdout, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = "?" if left is None else str(datetime.timedelta(seconds=round(left)))
        return f"{now_utc()}  {self.description} {self.done}/{self.total}  {rate:.1f} img/s  eta {eta}"


@contextlib.contextmanager
def progress_bar(
    enabled: bool, total: int, description: str, *, every_s: float = DEFAULT_EVERY_S
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`: a rich bar on a terminal, PlainProgress lines when stdout is not one,
    nothing when disabled (or when another live display is running and cannot nest)."""
    if not enabled:
        yield lambda n: None
        return
    if not Console().is_terminal:
        yield PlainProgress(total, description, every_s=every_s)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, transient=True)
    try:
        bar.start()
    except LiveError:  # the trainer's own display is live: it shows the run's progress
        yield lambda n: None
        return
    try:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
    finally:
        bar.stop()
