"""The unit of data every reader produces and every loader consumes: one training pair."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from giftnet.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# A problem with the data on disk; the message names the file (or list line) at fault.
DatasetError = DataError


@dataclasses.dataclass(frozen=True)
class Pair:
    """A composite image, its foreground mask and the real (harmonious) image it came from.

    `subset` is the iHarmony4 subset folder name (HCOCO, ..., or the name of a synthetic or
    ccHarmony set) and `name` the composite's file stem, unique within the subset.
    """

    composite: Path
    mask: Path
    real: Path
    subset: str
    name: str
