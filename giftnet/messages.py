"""Message helpers shared by every error and report that lists things."""

from __future__ import annotations

from collections.abc import Iterable


def first_n(items: Iterable[object], limit: int, sep: str = "\n  ") -> str:
    """The first `limit` items (as text) joined by `sep`, then `... and K more` when there are more.

    The one formatter behind every "N problems: first few ... and K more" message, so a long list
    of bad files never floods the terminal and the count is never lost.
    """
    texts = [str(item) for item in items]
    shown = sep.join(texts[:limit])
    if len(texts) > limit:
        shown += f"{sep}... and {len(texts) - limit} more"
    return shown
