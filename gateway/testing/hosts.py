"""Make connector names such as ``demo.m2.localhost`` resolve for real clients that take a host
name (gdc, mosquitto_pub, paho): they put it in the SNI and check the certificate against it.

:func:`mapped_hosts` adds ``127.0.0.1 <name>`` lines to ``/etc/hosts`` for the duration of a
``with`` block and removes exactly the lines it added when the block ends, so a test session
leaves the file as it found it.  Each line carries a marker naming the process that added it,
so two sessions running at once never remove each other's lines (a name listed twice in
``/etc/hosts`` is harmless).  Only root may write the file; without it the names are mapped
only if they already are, and :meth:`HostMap.map` says whether they resolve.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HostMap", "mapped_hosts"]

HOSTS = Path("/etc/hosts")
LOOPBACK = "127.0.0.1"


def _mapped(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if parts and parts[0] == LOOPBACK:
            names.update(parts[1:])
    return names


class HostMap:
    """The names a session has mapped; see :func:`mapped_hosts`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.marker = f"# gateway-tests pid {os.getpid()}"
        self.added: list[str] = []

    def map(self, *names: str) -> bool:
        """Map ``names`` to 127.0.0.1; True when every name resolves there afterwards."""
        try:
            present = _mapped(self.path.read_text())
        except OSError:
            return False
        missing = [n for n in names if n not in present]
        if not missing:
            return True
        if os.geteuid() != 0:
            return False
        with self.path.open("a") as fh:
            fh.write("".join(f"{LOOPBACK} {n} {self.marker}\n" for n in missing))
        self.added.extend(missing)
        return True

    def restore(self) -> None:
        """Remove the lines this map added (and only those)."""
        if not self.added:
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.rstrip("\n").endswith(self.marker)]
        # /etc/hosts may be a bind mount (containers): rewrite in place, never replace it
        self.path.write_text("".join(kept))
        self.added.clear()


@contextmanager
def mapped_hosts(*names: str, path: Path = HOSTS) -> Iterator[HostMap]:
    """Map ``names`` (and any passed to :meth:`HostMap.map` later) while the block runs."""
    hosts = HostMap(path)
    try:
        hosts.map(*names)
        yield hosts
    finally:
        hosts.restore()
