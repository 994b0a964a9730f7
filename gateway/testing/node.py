"""Helpers for tests and benchmarks of a multi-process node (docs/architecture.md "The
node"): which process serves a connection, pinning new connections to one worker, waiting
for ``run.json`` to change.

Pinning works because the workers share each listening socket: a worker that is stopped
(SIGSTOP) does not accept, so every new connection goes to the workers still running.
Connections already open stay where they are (and their processes resume at SIGCONT).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from gateway.app import RunInfo

__all__ = [
    "node_pids",
    "pinned_to",
    "read_run_json",
    "serving_pid",
    "tree_pids",
    "wait_for",
    "worker_pid",
]


def read_run_json(data: Path) -> RunInfo | None:
    try:
        return msgspec.convert(json.loads((data / "run.json").read_text()), RunInfo)
    except (OSError, ValueError, msgspec.ValidationError):
        return None


def worker_pid(info: RunInfo, index: int) -> int:
    return next(p.pid for p in info.processes if p.role == "worker" and p.index == index)


def node_pids(info: RunInfo) -> list[int]:
    return [p.pid for p in info.processes if p.pid]


def tree_pids(root: int) -> list[int]:
    """``root`` and every descendant (from /proc), for CPU and memory sums."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the TCP socket ``127.0.0.x:local_port`` ↔ ``…:remote_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    lport = int(parts[1].rsplit(":", 1)[1], 16)
                    rport = int(parts[2].rsplit(":", 1)[1], 16)
                    if lport == local_port and rport == remote_port:
                        return int(parts[9])
        except OSError:
            continue
    return None


def serving_pid(server_port: int, client_port: int, candidates: list[int]) -> int | None:
    """Which of ``candidates`` holds the server side of the connection from
    ``client_port`` to ``server_port`` (None: none does, or it is gone)."""
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


@contextmanager
def pinned_to(info: RunInfo, index: int) -> Iterator[None]:
    """While inside, new device connections go to worker ``index`` only: every other worker
    is stopped (SIGSTOP) and continued (SIGCONT) on exit."""
    others = [p.pid for p in info.processes if p.role == "worker" and p.index != index]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll ``predicate`` every 20 ms until it returns something true (returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s} s")
        time.sleep(0.02)
