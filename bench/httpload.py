"""HTTP/1.1 keep-alive write load generator (raw sockets, pre-encoded requests, processes).

Each connection holds one pre-encoded request (its own token header) and keeps ``window``
requests outstanding (1 = a device waiting for each answer; more = HTTP pipelining).
Responses are counted by parsing status line, headers and Content-Length; any status other
than 2xx counts as an error.  Latency is measured per response.  127.0.0.1 only.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import select
import socket
import ssl
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.loadcfg import LoadResult, err_key, merge, require_loopback, weighted_percentiles

MAX_CONNS_PER_PROCESS = 9_000


@dataclass(frozen=True)
class HttpLoad:
    """One HTTP run.  ``tokens``: one X-Exosite-CIK per connection, or empty for none."""

    port: int
    host: str = "127.0.0.1"
    host_header: str = "localhost"
    path: str = "/onep:v1/stack/alias"
    body: bytes = b"data_in=" + b"0123456789" * 5
    tokens: tuple[str, ...] = ()
    connections: int = 16
    window: int = 1
    duration: float = 2.0
    tls: bool = False
    processes: int = 0
    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        require_loopback(self.host)
        if self.tokens and len(self.tokens) != self.connections:
            raise ValueError("tokens must be empty or one per connection")

    def request(self, index: int) -> bytes:
        headers = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host_header}",
            "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
            f"Content-Length: {len(self.body)}",
        ]
        if self.tokens:
            headers.append(f"X-Exosite-CIK: {self.tokens[index]}")
        return ("\r\n".join(headers) + "\r\n\r\n").encode() + self.body

    def process_count(self) -> int:
        floor = -(-self.connections // MAX_CONNS_PER_PROCESS)
        wanted = self.processes or min(os.cpu_count() or 1, self.connections)
        return max(floor, min(wanted, self.connections))


def parse_responses(buf: bytearray) -> tuple[int, int]:
    """Remove complete responses from `buf`; return (2xx count, other count)."""
    ok = bad = 0
    pos = 0
    while True:
        head_end = buf.find(b"\r\n\r\n", pos)
        if head_end < 0:
            break
        head = bytes(buf[pos:head_end])
        status = int(head[9:12])
        length = 0
        low = head.lower()
        k = low.find(b"\r\ncontent-length:")
        if k >= 0:
            e = low.find(b"\r\n", k + 2)
            length = int(low[k + 17 : e if e >= 0 else None])
        end = head_end + 4 + length
        if end > len(buf):
            break
        if 200 <= status < 300:
            ok += 1
        else:
            bad += 1
        pos = end
    del buf[:pos]
    return ok, bad


class _HConn:
    __slots__ = ("bad", "ok", "outstanding", "pending", "rbuf", "req", "sent_at", "sock")

    def __init__(self, sock: socket.socket, req: bytes) -> None:
        self.sock = sock
        self.req = req
        self.rbuf = bytearray()
        self.pending: memoryview | None = None
        self.outstanding = 0
        self.ok = 0
        self.bad = 0
        self.sent_at: collections.deque[float] = collections.deque()


def _open(cfg: HttpLoad, index: int, ctx: ssl.SSLContext | None) -> _HConn:
    sock = socket.create_connection((cfg.host, cfg.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname=cfg.host_header)
    sock.setblocking(False)
    return _HConn(sock, cfg.request(index))


def _run(cfg: HttpLoad, conns: list[_HConn], t0: float) -> dict[str, Any]:
    ep = select.epoll()
    by_fd = {c.sock.fileno(): c for c in conns}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN | select.EPOLLOUT)
    lat: array[float] = array("d")
    errors: collections.Counter[str] = collections.Counter()
    while time.monotonic() < t0:
        time.sleep(0.002)
    end = t0 + cfg.duration
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    last = t0

    def refill(c: _HConn, now: float) -> None:
        if now >= end or c.pending is not None or c.outstanding >= cfg.window:
            return
        k = cfg.window - c.outstanding
        c.pending = memoryview(c.req * k)
        c.outstanding += k
        c.sent_at.extend([now] * k)

    def retire(c: _HConn, why: str | BaseException | None) -> None:
        if why is not None:
            errors[err_key(why)] += 1
        fd = c.sock.fileno()
        if by_fd.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                ep.unregister(fd)

    for c in conns:
        refill(c, t0)
    while by_fd:
        now = time.monotonic()
        if now > end + cfg.drain_timeout:
            for c in list(by_fd.values()):
                retire(c, "drain timeout")
            break
        for fd, ev in ep.poll(0.1):
            c = by_fd.get(fd)  # type: ignore[assignment]
            if c is None:
                continue
            try:
                if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                    try:
                        data = c.sock.recv(262_144)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        data = None
                    if data == b"":
                        retire(c, "closed by server")
                        continue
                    if data:
                        c.rbuf += data
                        ok, bad = parse_responses(c.rbuf)
                        now = time.monotonic()
                        for _ in range(ok + bad):
                            lat.append(now - c.sent_at.popleft())
                        c.ok += ok
                        c.bad += bad
                        c.outstanding -= ok + bad
                        last = now
                        refill(c, now)
                if c.pending is not None:
                    try:
                        n = c.sock.send(c.pending)
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        n = 0
                    c.pending = c.pending[n:] if n < len(c.pending) else None
                    ep.modify(
                        fd,
                        select.EPOLLIN | (select.EPOLLOUT if c.pending is not None else 0),
                    )
                if time.monotonic() >= end and c.outstanding == 0 and c.pending is None:
                    retire(c, None)
            except (OSError, ValueError) as exc:
                retire(c, exc)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    ep.close()
    bad = sum(c.bad for c in conns)
    if bad:
        errors["non-2xx responses"] += bad
    return {
        "ok": sum(c.ok for c in conns),
        "t_end": last,
        "lat": list(lat),
        "cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "errors": dict(errors),
    }


def _worker(cfg: HttpLoad, indices: list[int], pipe: multiprocessing.connection.Connection) -> None:
    try:
        ctx = None
        if cfg.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
        conns: list[_HConn] = []
        errors: collections.Counter[str] = collections.Counter()
        for i in indices:
            try:
                conns.append(_open(cfg, i, ctx))
            except OSError as exc:
                errors[err_key(exc)] += 1
        pipe.send(("ready", {"ok": len(conns), "errors": dict(errors)}))
        _tag, t0 = pipe.recv()
        pipe.send(("result", _run(cfg, conns, t0)))
        for c in conns:
            c.sock.close()
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def run_http(cfg: HttpLoad) -> LoadResult:
    """Open the connections, send for cfg.duration, wait for the answers; totals as LoadResult
    (``acked`` = 2xx responses, ``qos`` = 1 so that ``rate`` counts them)."""
    nproc = cfg.process_count()
    ctx = multiprocessing.get_context("fork")
    pipes = []
    procs = []
    for k in range(nproc):
        parent, child = ctx.Pipe()
        share = list(range(k, cfg.connections, nproc))
        procs.append(ctx.Process(target=_worker, args=(cfg, share, child), daemon=True))
        pipes.append(parent)
    res = LoadResult(qos=1)
    try:
        for p in procs:
            p.start()
        for pipe in pipes:
            tag, msg = pipe.recv()
            if tag == "error":
                raise RuntimeError(msg)
            res.connections += msg["ok"]
            merge(res.errors, msg["errors"])
        res.connect_errors = sum(res.errors.values())
        t0 = time.monotonic() + 0.05
        for pipe in pipes:
            pipe.send(("go", t0))
        lat: list[float] = []
        t_end = t0
        for pipe in pipes:
            tag, msg = pipe.recv()
            if tag == "error":
                raise RuntimeError(msg)
            res.acked += msg["ok"]
            res.cpu_seconds += msg["cpu"]
            lat += msg["lat"]
            t_end = max(t_end, msg["t_end"])
            merge(res.errors, msg["errors"])
        res.sent = res.acked + res.errors.get("non-2xx responses", 0)
        res.elapsed = t_end - t0
        p50, p99 = weighted_percentiles(lat, [1] * len(lat), (0.5, 0.99))
        res.p50_ms = None if p50 is None else p50 * 1e3
        res.p99_ms = None if p99 is None else p99 * 1e3
        return res
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        for pipe in pipes:
            pipe.close()


def summary(res: LoadResult) -> str:
    return f"{res.rate:,.0f} req/s p50 {res.p50_ms} ms errors {res.errors}"


__all__: Sequence[str] = ("HttpLoad", "parse_responses", "run_http")
