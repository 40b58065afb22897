"""Train GiftNet: `python train.py` (built-in demo data) or `python train.py --data ROOT ...`.

Single process or `torchrun --nproc-per-node N train.py ...`; see `python train.py --help`.
"""

from giftnet.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
