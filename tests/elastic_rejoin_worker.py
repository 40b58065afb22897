"""A torchrun worker for tests/test_elastic.py: a restarted group meets though one rank is late.

Run with --max-restarts 2. In attempts 0 and 1 both ranks join through
giftnet.training.distributed.init, all-reduce and agree once, then one rank exits with an error
(rank 1, then rank 0), so torchrun restarts the group. In attempt 1 rank 0 starts LATE_S late, in
attempt 2 rank 1: the early rank reads the store before the late one has written its address, and
must wait for the new address, not connect to the dead group's. Attempt 2 ends cleanly.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from giftnet.training import distributed

LATE_S = 2.0


def main() -> int:
    rank, attempt = int(os.environ["RANK"]), distributed.restart_count()
    if attempt > 0 and rank == attempt - 1:
        time.sleep(LATE_S)
    distributed.init("cpu")
    total = distributed.all_reduce_mean(torch.ones(1) * (rank + 1))
    agreed = distributed.Agreement("rejoin")(f"ok{attempt}")
    print(f"attempt {attempt} rank {rank}: joined, mean {total.item()}, agreed {agreed}", flush=True)
    if attempt < 2 and rank == 1 - attempt:
        os._exit(1)  # no clean exit: the agent's store keeps what this group wrote
    distributed.shutdown(ok=attempt == 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
