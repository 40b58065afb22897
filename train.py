"""Train GiftNet: `python train.py` (built-in demo data) or `python train.py --data ROOT ...`.

Single process or `torchrun --nproc-per-node N train.py ...`; see `python train.py --help`.
"""

from giftnet.allocator import configure_allocator
from giftnet.training.cli import main

if __name__ == "__main__":
    configure_allocator()
    raise SystemExit(main())
