"""An advisory lock beside a dataset index, so that processes refreshing it take turns.

Eight ranks of a node (or every rank of a job on a shared file system) open the loaders at the
same moment, and each would build the same entries and write its own index and runs file, each
deleting the runs files of the others. With the lock, readers share it and a refresh is
exclusive: the first process builds, the others wait and then find the entries built.

The lock is `flock` on `SUBSET/giftnet-index.lock`, a file that is created once and never removed
(removing a lock file lets two processes lock two different files). Where it cannot be taken (no
`fcntl`, a read-only dataset, a file system without flock such as Lustre mounted without
`-o flock`), the index works as before without it: each process builds what it needs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "giftnet-index.lock"


def lock_file_for(index: Path) -> Path:
    """The lock file of index file `index`."""
    return index.parent / LOCK_NAME


@contextlib.contextmanager
def index_lock(index: Path, *, exclusive: bool) -> Iterator[bool]:
    """Hold the lock of `index` (shared or exclusive) inside the block; yields whether it is held."""
    if fcntl is None:
        yield False
        return
    path, cloexec = lock_file_for(index), getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o666)
    except OSError:
        try:  # a read-only dataset: flock works on a read-only descriptor too
            fd = os.open(path, os.O_RDONLY | cloexec)
        except OSError:  # no lock file and none can be made: the index is then kept in memory
            yield False
            return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            held = True
        except OSError:  # ENOLCK, ENOSYS, EOPNOTSUPP: this file system has no flock
            held = False
        yield held
    finally:
        os.close(fd)  # closing the descriptor releases the lock
