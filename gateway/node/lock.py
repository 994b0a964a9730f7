"""The data directory's lock: one gateway per directory (``fcntl.flock`` on
``DIR/gateway.lock``, held by ``gateway serve`` for as long as it runs and released by the
kernel however it ends)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["DataDirLocked", "lock_data_dir"]


class DataDirLocked(Exception):
    """Another gateway serves the directory; the message is the one line to show."""


def lock_data_dir(data: Path) -> int:
    """Take the lock (non-blocking) and write our pid into the file; returns the descriptor
    to keep open.  Raises :class:`DataDirLocked`."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / "gateway.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirLocked(
            f"{data} is in use by another gateway (pid {holder}); stop it or pass another --data"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
