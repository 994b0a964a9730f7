"""Ports for test and benchmark servers that must be chosen before the server starts.

A server that is restarted on the same port (the disk-full probe, the cluster's nodes,
PostgreSQL, HAProxy), or whose port must be written in a command line before it runs, cannot
bind port 0.  The usual trick — bind port 0, read the number, close — hands out a port from
the kernel's *ephemeral* range, the same range every outgoing connection on the machine takes
its local port from: between the choice and the server's bind (or between two starts of it),
a client connection of any process can land on that port, and the start fails with "address
in use".  With tens of thousands of load-generator connections open that is not rare.  So
these ports come from below the ephemeral range (read from the kernel), at random so that
parallel runs rarely pick the same one, and each is checked free when chosen.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port", "free_ports"]

LOWEST = 10_000  # below: well-known and registered services' habits
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default
    return lo, hi


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` now, outside the ephemeral range."""
    lo, hi = _ephemeral()
    pool = [*range(LOWEST, min(lo, 65_536)), *range(max(hi + 1, LOWEST), 65_536)]
    if len(pool) < n:
        raise RuntimeError(f"no room outside the ephemeral range {lo}-{hi} for {n} ports")
    chosen: list[int] = []
    for port in random.sample(pool, len(pool)):
        if _bindable(host, port):
            chosen.append(port)
            if len(chosen) == n:
                return chosen
    raise RuntimeError(f"fewer than {n} free ports on {host} outside {lo}-{hi}")


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on ``host`` now, outside the ephemeral range."""
    return free_ports(1, host)[0]
