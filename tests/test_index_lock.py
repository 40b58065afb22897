"""giftnet.pipeline.index_lock: processes refreshing one index take turns, and the first one builds."""

from __future__ import annotations

import errno
import multiprocessing
import threading
import time

import pytest

from giftnet.pipeline import index_lock, runs_file
from giftnet.pipeline.index import INDEX_NAME, index_pairs
from tests.data_helpers import write_subset

pytestmark = pytest.mark.skipif(index_lock.fcntl is None, reason="no fcntl: the index works without a lock")


def _refresh(pairs, out):
    out.put(index_pairs(pairs, workers=1).rebuilt)


def _hold(index, locked, release, exclusive=True):
    # Its own process: a lock held by the test's process would be inherited by the forked
    # refreshers (flock belongs to the open file, which a fork shares) and never released.
    with index_lock.index_lock(index, exclusive=exclusive) as held:
        locked.put(held)
        release.wait(60)


def test_processes_wait_for_the_lock_and_the_first_builds_for_all(tmp_path):
    pairs = write_subset(tmp_path / "Sub", n=4)
    index = tmp_path / "Sub" / INDEX_NAME
    ctx = multiprocessing.get_context("fork")
    out, locked, release = ctx.Queue(), ctx.Queue(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(index, locked, release))
    holder.start()
    assert locked.get(timeout=30)
    procs = [ctx.Process(target=_refresh, args=(pairs, out)) for _ in range(3)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    assert not index.exists(), "a process refreshed the index while another held its lock"
    release.set()
    holder.join(timeout=30)
    rebuilt = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert rebuilt == [0, 0, 12]  # one process built every entry; the others found them built
    assert len(list(index.parent.glob(f"{runs_file.PREFIX}*.bin"))) == 1
    assert index_lock.lock_file_for(index).is_file()


def test_readers_share_the_lock(tmp_path):
    pairs = write_subset(tmp_path / "Sub", n=2)
    index = tmp_path / "Sub" / INDEX_NAME
    index_pairs(pairs, workers=1)
    ctx = multiprocessing.get_context("fork")
    locked, release, rebuilt = ctx.Queue(), ctx.Event(), []
    holder = ctx.Process(target=_hold, args=(index, locked, release, False))
    holder.start()
    try:
        assert locked.get(timeout=30)
        # In a thread, so that a reader wrongly taking the lock alone fails the test instead of hanging it.
        reader = threading.Thread(target=lambda: rebuilt.append(index_pairs(pairs, workers=1).rebuilt), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive(), "reading a fresh index waited for another reader's shared lock"
    finally:
        release.set()
        holder.join(timeout=30)
    assert rebuilt == [0]  # a fresh index is read under a shared lock


def test_without_flock_the_index_still_builds(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(index_lock.fcntl, "flock", no_flock)
    pairs = write_subset(tmp_path / "Sub", n=2)
    assert index_pairs(pairs, workers=1).rebuilt == 6
    assert index_pairs(pairs, workers=1).rebuilt == 0
