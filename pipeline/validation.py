"""A validation split carved from the train list by real image, so a model is selected on neither train nor test.

iHarmony4 has no validation split. The trainer holds out the train pairs of a fraction of the
real images: every composite of a held-out real image goes to validation, so no real image is
in both parts (composites of one real image share its background and its foreground object).
Membership is a pure function of the real image's subset and file name (a SHA-256 of
"SUBSET/NAME"), not of the list's order, its length or the dataset's location: the same image is
held out on every rank, on every resume, and when the list grows. The held-out share of images
is `fraction` in expectation, not exactly (a tiny list may hold out none).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from giftnet.pipeline.pairs import Pair

# Membership keys are the first 8 bytes of the digest as a number in [0, 2**64).
_SCALE = 2**64


def image_key(pair: Pair) -> str:
    """The real image a pair belongs to: 'SUBSET/FILE NAME' (the unit that is never split)."""
    return f"{pair.subset}/{pair.real.name}"


def held_out(key: str, fraction: float) -> bool:
    """Whether the real image `key` is in the validation split at `fraction` (0: never, 1: always)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * _SCALE


def carve_validation(pairs: Sequence[Pair], fraction: float) -> tuple[list[Pair], list[Pair]]:
    """(train pairs, validation pairs) of a train list, by real image; the order of each is the list's."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    decided: dict[str, bool] = {}
    train: list[Pair] = []
    val: list[Pair] = []
    for pair in pairs:
        key = image_key(pair)
        if key not in decided:
            decided[key] = held_out(key, fraction)
        (val if decided[key] else train).append(pair)
    return train, val
