"""Connection handling of the MQTT load generator: concurrent (TLS) connect + CONNACK,
SUBSCRIBE, counting received PUBLISHes, DISCONNECT.  Runs inside worker processes."""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import select
import selectors
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

from bench import mqtt_wire as wire
from bench.loadcfg import RECV_SIZE, MqttLoad, err_key

EP_IN = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
EP_OUT = select.EPOLLOUT


class Conn:
    __slots__ = (
        "acked",
        "batches",
        "bytes_sent",
        "chunks",
        "confirmed",
        "done_at",
        "index",
        "inflight",
        "next_idx",
        "pending",
        "pings_out",
        "rbuf",
        "sock",
        "state",
        "writing",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.state = "connecting"
        self.rbuf = bytearray()
        self.pending: memoryview | None = None
        self.bytes_sent = 0
        self.acked = 0
        self.inflight = 0
        self.next_idx = 0
        self.batches: collections.deque[list[float]] = collections.deque()
        self.done_at = 0.0
        self.pings_out = 0
        self.chunks = 0
        self.confirmed = 0
        self.writing = False
        self.index = -1


def tls_context(cfg: MqttLoad) -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT without the system CA store (loading it costs ~0.1 s per worker);
    # verification only against an explicit cafile.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cfg.cafile)
    if cfg.alpn:
        ctx.set_alpn_protocols(list(cfg.alpn))
    return ctx


def connect_packet(cfg: MqttLoad, index: int) -> bytes:
    if cfg.credentials:
        c = cfg.credentials[index]
        return wire.connect(
            c.client_id, username=c.username, password=c.password, keepalive=cfg.keepalive
        )
    return wire.connect(f"lg{os.getpid()}-{index}", keepalive=cfg.keepalive)


def connect_all(
    cfg: MqttLoad, indices: Sequence[int], concurrency: int
) -> tuple[list[Conn], dict[str, int], float]:
    """Open, (TLS-)handshake and MQTT-CONNECT every index; at most `concurrency` in progress.

    Returns the accepted connections (blocking=False, TCP_NODELAY), error counts and the time
    at which the last CONNACK arrived.
    """
    sel = selectors.DefaultSelector()
    ctx = tls_context(cfg) if cfg.tls else None
    todo = collections.deque(indices)
    ok: list[Conn] = []
    errors: collections.Counter[str] = collections.Counter()
    active: dict[int, tuple[Conn, int]] = {}
    deadline = time.monotonic() + cfg.connect_timeout
    last = time.monotonic()

    def fail(conn: Conn, why: BaseException | str) -> None:
        errors[err_key(why)] += 1
        active.pop(id(conn), None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn.sock)
        conn.sock.close()

    def send_connect(conn: Conn, index: int) -> None:
        conn.sock.send(connect_packet(cfg, index))  # < 100 bytes: fits any empty buffer
        conn.state = "connack"
        sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def handshake(conn: Conn, index: int) -> None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            sel.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        send_connect(conn, index)

    while (todo or active) and time.monotonic() < deadline:
        while todo and len(active) < concurrency:
            index = todo.popleft()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            conn = Conn(sock)
            conn.index = index
            rc = sock.connect_ex((cfg.host, cfg.port))
            if rc not in (0, errno.EINPROGRESS):
                errors[err_key(OSError(rc, os.strerror(rc)))] += 1
                sock.close()
                continue
            sel.register(sock, selectors.EVENT_WRITE, conn)
            active[id(conn)] = (conn, index)
        for key, _ev in sel.select(timeout=0.5):
            conn = key.data
            index = active[id(conn)][1]
            try:
                if conn.state == "connecting":
                    rc = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if rc:
                        fail(conn, OSError(rc, os.strerror(rc)))
                        continue
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if ctx is not None:
                        sel.unregister(conn.sock)
                        conn.sock = ctx.wrap_socket(
                            conn.sock,
                            server_hostname=cfg.server_hostname,
                            do_handshake_on_connect=False,
                        )
                        sel.register(conn.sock, selectors.EVENT_WRITE, conn)
                        conn.state = "tls"
                        handshake(conn, index)
                    else:
                        send_connect(conn, index)
                elif conn.state == "tls":
                    handshake(conn, index)
                else:
                    try:
                        data = conn.sock.recv(4096)
                    except ssl.SSLWantReadError:
                        continue
                    if not data:
                        fail(conn, "closed before CONNACK")
                        continue
                    conn.rbuf += data
                    frames = wire.split_frames(conn.rbuf)
                    if not frames:
                        continue
                    first, body = frames[0]
                    if first != wire.CONNACK or len(body) < 2:
                        fail(conn, f"expected CONNACK, got 0x{first:02x}")
                    elif body[1] != 0:
                        fail(conn, f"CONNACK rc={body[1]}")
                    else:
                        sel.unregister(conn.sock)
                        active.pop(id(conn))
                        conn.state = "open"
                        ok.append(conn)
                        last = time.monotonic()
            except (OSError, ValueError) as exc:
                fail(conn, exc)
    for conn, _index in list(active.values()):
        fail(conn, "connect timeout")
    errors["not attempted (timeout)"] += len(todo)
    if not errors["not attempted (timeout)"]:
        del errors["not attempted (timeout)"]
    sel.close()
    return ok, dict(errors), last


def subscribe_all(cfg: MqttLoad, conns: list[Conn], errors: dict[str, int]) -> list[Conn]:
    """SUBSCRIBE each connection to ``<subscribe_prefix><index>`` (QoS 0), wait for SUBACKs."""
    kept: list[Conn] = []
    for c in conns:
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(cfg.connect_timeout)
            c.sock.sendall(wire.subscribe(f"{cfg.subscribe_prefix}{c.index}"))
            while True:
                data = c.sock.recv(4096)
                if not data:
                    raise ConnectionError("closed before SUBACK")
                c.rbuf += data
                frames = wire.split_frames(c.rbuf)
                if any(f == wire.SUBACK for f, _b in frames):
                    break
            c.sock.setblocking(False)
            kept.append(c)
        except (OSError, ValueError) as exc:
            key = err_key(exc)
            errors[key] = errors.get(key, 0) + 1
            c.sock.close()
    return kept


def receive(cfg: MqttLoad, conns: list[Conn], t0: float) -> dict[str, Any]:
    """Count PUBLISHes arriving on every connection until each has ``max(1, count)`` or until
    t0 + duration; report the count and the arrival time of the last one."""
    want = max(1, cfg.count)
    ep = select.epoll()
    by_fd = {c.sock.fileno(): c for c in conns}
    got = dict.fromkeys(by_fd, 0)
    for fd in by_fd:
        ep.register(fd, EP_IN)
    end = t0 + cfg.duration
    last = t0
    errors: collections.Counter[str] = collections.Counter()
    waiting = {fd for fd in by_fd}
    while waiting and time.monotonic() < end:
        for fd, _ev in ep.poll(max(0.0, min(0.2, end - time.monotonic()))):
            c = by_fd[fd]
            try:
                data = c.sock.recv(RECV_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError as exc:
                errors[err_key(exc)] += 1
                waiting.discard(fd)
                ep.unregister(fd)
                continue
            if not data:
                errors["closed by server"] += 1
                waiting.discard(fd)
                ep.unregister(fd)
                continue
            c.rbuf += data
            n = sum(1 for f, _b in wire.split_frames(c.rbuf) if f & wire.TYPE_MASK == wire.PUBLISH)
            if n:
                got[fd] += n
                last = time.monotonic()
                if got[fd] >= want and fd in waiting:
                    waiting.discard(fd)
    ep.close()
    if waiting:
        errors["not delivered before timeout"] += len(waiting)
    return {
        "received": sum(got.values()),
        "complete": len(by_fd) - len(waiting),
        "t_last": last,
        "errors": dict(errors),
    }


def close_all(conns: list[Conn]) -> None:
    for c in conns:
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(0.5)
            c.sock.send(wire.DISCONNECT_BYTES)
        except (OSError, ValueError):
            pass
        c.sock.close()
