"""CPU seconds of this process and all its descendants, the ones still running included.

resource.getrusage(RUSAGE_CHILDREN) counts a child only once it has been reaped, so a figure taken
while DALI's feeder process or DataLoader workers live would miss them. Live descendants are read
from /proc (Linux; utime + stime in clock ticks, 10 ms). A child counted live at the start of a
figure and reaped by its end is counted once: reaped (all its life) minus live (before the start).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process from /proc/PID/stat; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ... utime, stime
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def live_descendants_cpu(root: int | None = None) -> float:
    """CPU seconds of the processes below `root` (default: this one) that have not been reaped."""
    root = os.getpid() if root is None else root
    proc = Path("/proc")
    if not proc.is_dir():
        return 0.0
    children: dict[int, list[tuple[int, float]]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    total, todo = 0.0, [root]
    while todo:
        for pid, cpu in children.get(todo.pop(), []):
            total += cpu
            todo.append(pid)
    return total


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process, its reaped children and its live descendants."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + live_descendants_cpu()
