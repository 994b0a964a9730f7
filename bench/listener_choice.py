"""Which listening-socket layout a multi-process node uses: measured, not guessed
(docs/decisions.md "Multi-process node").

Two worker processes accept on 127.0.0.1 and write one byte to every connection they accept:

* ``shared``: one listening socket bound before the fork, inherited by both workers;
* ``reuseport``: each worker binds its own socket with ``SO_REUSEPORT``.

For each layout: how evenly 2,000 connections spread over the two workers, and how many of
1,000 new connections are served within 2 s while one worker does not accept (stopped with
SIGSTOP: a worker at its connection cap, busy, or dying, behaves the same toward its accept
queue).  ``python -m bench.listener_choice`` prints one line per layout.  Bounded: 127.0.0.1
only, a few thousand connections, every wait under a deadline.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time

CONNS_BALANCE = 2000
CONNS_STALLED = 1000
WAIT_S = 2.0


def _listener(port: int, reuseport: bool) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    return s


def _worker(sock: socket.socket, tag: bytes) -> None:
    held = []
    while True:
        conn, _ = sock.accept()
        conn.send(tag)
        held.append(conn)


def _start(layout: str) -> tuple[int, list[int], socket.socket | None]:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    shared = _listener(port, False) if layout == "shared" else None
    pids = []
    for tag in (b"1", b"2"):
        pid = os.fork()
        if pid == 0:
            try:
                sock = shared if shared is not None else _listener(port, True)
                _worker(sock, tag)
            finally:
                os._exit(0)
        pids.append(pid)
    time.sleep(0.3)
    return port, pids, shared


def _connect_all(port: int, n: int, wait_s: float) -> dict[bytes, int]:
    socks = []
    for _ in range(n):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        socks.append(c)
    got: dict[bytes, int] = {}
    pending = {c.fileno(): c for c in socks}
    poller = select.epoll()
    for fd in pending:
        poller.register(fd, select.EPOLLIN)
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        for fd, _ev in poller.poll(0.05):
            poller.unregister(fd)
            c = pending.pop(fd)
            try:
                b = c.recv(1)
            except OSError:
                b = b""
            got[b] = got.get(b, 0) + 1
    poller.close()
    for c in socks:
        c.close()
    return got


def measure(layout: str) -> str:
    port, pids, shared = _start(layout)
    try:
        balance = _connect_all(port, CONNS_BALANCE, 5.0)
        os.kill(pids[1], signal.SIGSTOP)
        stalled = _connect_all(port, CONNS_STALLED, WAIT_S)
        os.kill(pids[1], signal.SIGCONT)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if shared is not None:
            shared.close()
    served = sum(v for k, v in stalled.items() if k)
    return (
        f"{layout:9}  spread of {CONNS_BALANCE}: worker 1 {balance.get(b'1', 0)}, "
        f"worker 2 {balance.get(b'2', 0)}; one worker not accepting: {served}/{CONNS_STALLED} "
        f"served within {WAIT_S:g} s"
    )


def main() -> int:
    for layout in ("shared", "reuseport"):
        print(measure(layout), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
