"""Facts written once (issue 12, item 4): a second copy of any of these is how the 16-bit bug of issue 11
began (two decoders drifting apart), so a new copy fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("giftnet", "pipeline", "bench") for p in (ROOT / folder).rglob("*.py"))

# (what, regex, the only files allowed to match)
ONCE = [
    ("ImageNet mean/std arithmetic", r"IMAGENET_(MEAN|STD)\b", {"pipeline/pairs.py", "pipeline/__init__.py", "giftnet/imagenet.py"}),
    ("the '... and K more' formatter", r"and \{len\([^)]*\)\s*-", {"giftnet/messages.py"}),
    ("autocast to a low precision", r"torch\.autocast\((?![^)]*enabled=False)", {"giftnet/training/precision.py"}),
    ("16-bit to 8-bit scaling", r">>\s*8|65535|/\s*257", {"pipeline/images.py"}),
    ("image decoding", r"Image\.open\(|\.convert\(\"RGB\"\)|exif_transpose", {"pipeline/images.py", "pipeline/augment.py"}),
]  # fmt: skip


@pytest.mark.parametrize(("what", "pattern", "allowed"), ONCE, ids=[o[0] for o in ONCE])
def test_written_once(what, pattern, allowed):
    found = sorted({str(p.relative_to(ROOT)) for p in SOURCES if re.search(pattern, p.read_text())} - set(allowed))
    assert found == [], f"{what} is written again in {found}; use the shared one"


def test_the_scanner_sees_the_shared_copies():
    for what, pattern, allowed in ONCE:
        assert any(re.search(pattern, (ROOT / a).read_text()) for a in allowed if (ROOT / a).exists()), what
