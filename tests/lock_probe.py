"""A lock that the test process holds while it starts a worker pool, and a worker function that tries to take it."""

from __future__ import annotations

import threading

HELD = threading.Lock()


def acquire_within(seconds: float) -> bool:
    """True if this process can take :data:`HELD` within ``seconds`` (a forked copy of a held lock never frees)."""
    taken = HELD.acquire(timeout=seconds)
    if taken:
        HELD.release()
    return taken
