"""The gateway's one wall clock: timestamps in microseconds since the Unix epoch.

Every durable timestamp (events, ``lastseen``, resource values, content) is an integer
number of microseconds, the unit of the Murano device APIs (a set value arrives as
``$resource/<alias>/<µs>``).  Protocol code never reads a clock (docs/architecture.md
principle 1): the I/O layers call :func:`now_us` and pass the value in, so tests can give
any time they like.  Deadlines (keep-alive, handshakes) use Trio's monotonic clock instead,
which ``trio.testing.MockClock`` replaces in tests.
"""

from __future__ import annotations

import time

__all__ = ["US_PER_S", "now_us"]

US_PER_S = 1_000_000  # microseconds per second


def now_us() -> int:
    """Wall-clock time in microseconds (``time.time_ns() // 1000``)."""
    return time.time_ns() // 1000
