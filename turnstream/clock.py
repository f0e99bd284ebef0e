"""The one clock turnstream stamps Redis with: wall time in whole milliseconds."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, as the run scripts, leases and stream tokens count time."""
    return time.time_ns() // 1_000_000
