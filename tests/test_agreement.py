"""The ranks' step agreement (giftnet.training.distributed.Agreement) over a real TCP store on loopback:
it returns every rank's status, waits for a late peer, and a signal stops a rank whose peers are gone."""

from __future__ import annotations

import datetime
import signal
import threading
import time

import pytest
import torch.distributed as tdist

from giftnet.training.distributed import Agreement
from giftnet.training.signals import StopRequested

TIMEOUT = datetime.timedelta(seconds=60)


@pytest.fixture
def server():
    return tdist.TCPStore("127.0.0.1", 0, 1, True, timeout=TIMEOUT)


@pytest.fixture
def store(server):
    return tdist.PrefixStore("giftnet/attempt0/", server)


def _peer_posts(server, key: str, value: str, after: float) -> threading.Thread:
    """Another rank posting later, through a client of its own (as another process would)."""
    client = tdist.PrefixStore("giftnet/attempt0/", tdist.TCPStore("127.0.0.1", server.port, 1, False, timeout=TIMEOUT))

    def post():
        time.sleep(after)
        client.set(key, value)

    t = threading.Thread(target=post, daemon=True)
    t.start()
    return t


def test_statuses_of_all_ranks_in_rank_order(store):
    store.set("giftnet/s/0/1", "stop")
    agree = Agreement("s", store=store, ranks=(0, 2))
    assert agree("ok") == ["ok", "stop"]
    store.set("giftnet/s/1/1", "ok")
    assert agree("end") == ["end", "ok"]
    assert not store.check(["giftnet/s/0/0"])  # rank 0 deletes a round every rank has read


def test_a_late_peer_is_waited_for(server, store):
    agree = Agreement("late", store=store, ranks=(1, 2))
    _peer_posts(server, "giftnet/late/0/0", "ok", after=0.6)
    start = time.monotonic()
    assert agree("ok") == ["ok", "ok"]
    assert time.monotonic() - start >= 0.5


def test_a_signal_while_waiting_still_hears_a_peer_that_answers_within_the_grace(server, store):
    agree = Agreement("g", store=store, ranks=(0, 2), stopping=lambda: signal.SIGTERM, grace=5.0)
    _peer_posts(server, "giftnet/g/0/1", "stop", after=0.6)
    assert agree("ok") == ["ok", "stop"]  # the peer stopped too: both save at this boundary


def test_a_signal_stops_a_rank_whose_peer_is_gone_after_the_grace(store):
    signalled: list[int] = []
    agree = Agreement("gone", store=store, ranks=(0, 3), stopping=lambda: signalled[0] if signalled else None,
                      grace=0.5)  # fmt: skip
    store.set("giftnet/gone/0/2", "ok")  # rank 2 answered, rank 1 is dead
    threading.Timer(0.4, lambda: signalled.append(signal.SIGTERM)).start()
    start = time.monotonic()
    with pytest.raises(StopRequested, match="waiting for the other ranks") as info:
        agree("ok")
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed < 3.0  # signal at 0.4 s + 0.5 s grace, not the store's 60 s timeout
    assert info.value.signum == signal.SIGTERM
