"""Make ``<cid>.m2.localhost`` resolve for real clients that take a host name (gdc,
mosquitto_pub): append it to /etc/hosts when running as root (CI does), else report that
the caller must skip."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ensure_hosts"]

HOSTS = Path("/etc/hosts")


def ensure_hosts(*names: str) -> bool:
    """True when every name maps to 127.0.0.1 (adding what is missing if we may)."""
    try:
        text = HOSTS.read_text()
    except OSError:
        return False
    present = set()
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if parts and parts[0] == "127.0.0.1":
            present.update(parts[1:])
    missing = [n for n in names if n not in present]
    if not missing:
        return True
    if os.geteuid() != 0:
        return False
    with HOSTS.open("a") as fh:
        fh.write("".join(f"127.0.0.1 {n}\n" for n in missing))
    return True
