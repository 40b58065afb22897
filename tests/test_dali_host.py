"""giftnet.pipeline.dali_host: CPU-only DALI's tail runs one batch ahead, never past DALI's buffers,
and stops with the epoch; normalise_into is normalise bit for bit."""

import concurrent.futures
import threading

import pytest
import torch

from giftnet.imagenet import normalise, normalise_into
from giftnet.pipeline import dali_loader
from giftnet.pipeline.dali_host import Pending, one_ahead
from giftnet.pipeline.loaders import make_train_loader
from tests.data_helpers import write_triplets

needs_dali = pytest.mark.skipif(
    dali_loader.DALI_IMPORT_ERROR is not None, reason=f"DALI not importable: {dali_loader.DALI_IMPORT_ERROR}"
)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalise_into_is_normalise(dtype):
    x = torch.randint(0, 256, (3, 17, 9)).to(dtype)
    out = torch.full((3, 17, 9), float("nan"))
    assert normalise_into(x, out) is out
    assert torch.equal(out, normalise(x))


class _Logged:
    """A Pending that logs when its result is taken."""

    def __init__(self, k, log):
        self.k, self.log = k, log

    def result(self):
        self.log.append(f"done {self.k}")
        return {"k": self.k}


def test_one_ahead_hands_on_the_last_batch_while_the_next_one_runs():
    log = []

    def starts():
        for k in range(3):
            log.append(f"start {k}")  # pipe.run() for batch k: only once batch k-1's tail is done
            yield _Logged(k, log)

    for batch in one_ahead(starts()):
        log.append(f"got {batch['k']}")
    assert log == ["start 0", "done 0", "start 1", "got 0", "done 1", "start 2", "got 1", "done 2", "got 2"]


def test_one_ahead_of_nothing_and_a_failing_sample():
    assert list(one_ahead(iter(()))) == []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        fine, bad = pool.submit(lambda: None), pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            list(one_ahead(iter([Pending({}, [fine, bad])])))


def _tail_threads():
    return [t for t in threading.enumerate() if t.name.startswith("giftnet-tail")]


@needs_dali
def test_an_epoch_left_early_stops_its_tail_and_the_next_is_unchanged(tmp_path):
    pairs = write_triplets(tmp_path)
    kw = {"batch_size": 2, "crop_size": 32, "num_workers": 2, "backend": "dali"}
    batches = make_train_loader(pairs, **kw).epoch(1)
    next(batches)
    assert _tail_threads()  # the pool is working on the next batch meanwhile
    batches.close()
    assert not _tail_threads()
    loader = make_train_loader(pairs, **kw)
    left = loader.epoch(0)
    next(left)
    del left  # dropped mid-epoch without close(): the generator's finally runs when collected
    full = list(loader.epoch(1))
    fresh = list(make_train_loader(pairs, **kw).epoch(1))
    assert len(full) == len(fresh) > 1
    for a, b in zip(full, fresh, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
