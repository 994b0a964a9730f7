"""Connection handling of the MQTT load generator: concurrent (TLS) connect + CONNACK,
SUBSCRIBE, counting received PUBLISHes, DISCONNECT.  Runs inside worker processes.

TLS runs over ``ssl.SSLObject`` on memory BIOs (:class:`TlsWire`), never an ``SSLSocket``:
the generator decides what becomes a TLS record.  :meth:`TlsWire.seal` makes each packet
its own record (one ``SSL_write`` each), which is what device clients send (paho,
murano-client and mosquitto_pub write one message per ``send``), and it can do so *before*
the timed phase, so that sending is a plain socket write of pre-encrypted bytes and the
generator never caps a fast peer; :meth:`TlsWire.seal_batched` packs a buffer into 16 KiB
records (the labelled "batched" scenarios).
"""

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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bench import mqtt_wire as wire
from bench.loadcfg import RECV_SIZE, MqttLoad, err_key

RECORD_PLAINTEXT = 16384  # the most plaintext one TLS record carries (RFC 8446 §5.1)
EP_IN = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
EP_OUT = select.EPOLLOUT


class TlsWire:
    """The client side of one TLS connection on memory BIOs (see the module docstring)."""

    __slots__ = ("incoming", "obj", "outgoing")

    def __init__(self, ctx: ssl.SSLContext, server_hostname: str | None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)

    def handshake(self) -> bool:
        """One handshake step; True once complete.  Send ``pending()`` afterwards."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def pending(self) -> bytes:
        """Ciphertext waiting to go to the socket."""
        return self.outgoing.read()

    def feed(self, data: bytes) -> bytes:
        """Ciphertext from the socket in, every plaintext byte it completes out (``b""`` if
        no record is complete yet).  Raises ``ssl.SSLError`` (also at close_notify)."""
        self.incoming.write(data)
        parts: list[bytes] = []
        read = self.obj.read
        while True:
            try:
                # one record per call; ask for one record's worth, not RECV_SIZE (the call
                # allocates what it is asked for: 256 KiB per PUBACK record would dominate)
                parts.append(read(RECORD_PLAINTEXT))
            except ssl.SSLWantReadError:
                return b"".join(parts)

    def seal(self, packets: Iterable[bytes | memoryview]) -> bytes:
        """One TLS record per packet (one ``SSL_write`` each); the ciphertext of all."""
        write = self.obj.write
        for packet in packets:
            write(packet)
        return self.outgoing.read()

    def seal_batched(self, data: bytes | memoryview) -> bytes:
        """``data`` in as few records as possible (16 KiB of plaintext each)."""
        self.obj.write(data)
        return self.outgoing.read()


def send_now(sock: socket.socket, data: bytes, timeout: float = 10.0) -> None:
    """Write all of ``data`` to a non-blocking socket (small control traffic: handshakes,
    CONNECT, SUBSCRIBE, DISCONNECT), waiting for room when the buffer is full."""
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            n = 0
        view = view[n:]
        if view:
            if time.monotonic() > deadline:
                raise TimeoutError("socket stayed full")
            select.select([], [sock], [], 0.1)


class Conn:
    __slots__ = (
        "acked",
        "batches",
        "bytes_sent",
        "chunks",
        "cipher",
        "cipher_at",
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
        "tls",
        "writing",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.tls: TlsWire | None = None
        # pre-encrypted publishes (TLS, one record each): QoS 0 chunks, or the QoS 1 stream
        self.cipher: collections.deque[bytes] | bytes = b""
        self.cipher_at = 0  # QoS 1: records of `cipher` already sent
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


PROGRESS_INTERVAL = 2.0  # seconds between a worker's progress reports while it connects


def connect_all(
    cfg: MqttLoad,
    indices: Sequence[int],
    concurrency: int,
    *,
    rate: float = 0.0,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> tuple[list[Conn], dict[str, int], float]:
    """Open, (TLS-)handshake and MQTT-CONNECT every index; at most `concurrency` in progress.

    ``rate`` > 0 paces the starts: at most ``rate`` new connections per second (after a
    burst of ``concurrency``), so that thousands of handshakes arrive as a steady stream the
    server can finish within its handshake deadline instead of a pile that waits in its
    backlog until it is cut.  ``progress`` is called every ``PROGRESS_INTERVAL`` seconds
    with the counts so far (``ok``, ``failed``, ``in_flight``, ``waiting``): a parent can
    tell a slow connect phase from a stuck worker.

    Bounded: nothing blocks (handshake and CONNECT bytes that do not fit the socket wait
    for it to be writable), and at ``cfg.connect_timeout`` every connection still in
    progress counts as ``connect timeout`` and every one not started as
    ``not attempted (timeout)``.  Returns the accepted connections (blocking=False,
    TCP_NODELAY), error counts by reason and the time at which the last CONNACK arrived.
    """
    sel = selectors.DefaultSelector()
    ctx = tls_context(cfg) if cfg.tls else None
    todo = collections.deque(indices)
    ok: list[Conn] = []
    errors: collections.Counter[str] = collections.Counter()
    active: dict[int, Conn] = {}
    t_start = time.monotonic()
    deadline = t_start + cfg.connect_timeout
    last = t_start
    started = 0
    next_report = t_start + PROGRESS_INTERVAL

    def fail(conn: Conn, why: BaseException | str) -> None:
        errors[err_key(why)] += 1
        active.pop(id(conn), None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn.sock)
        conn.sock.close()

    def watch(conn: Conn) -> None:
        """Readable always; writable too while bytes wait for room in the socket."""
        events = selectors.EVENT_READ
        if conn.pending is not None:
            events |= selectors.EVENT_WRITE
        sel.modify(conn.sock, events, conn)

    def flush(conn: Conn) -> None:
        while conn.pending is not None:
            try:
                n = conn.sock.send(conn.pending)
            except BlockingIOError:
                return
            conn.pending = conn.pending[n:] if n < len(conn.pending) else None

    def write(conn: Conn, data: bytes) -> None:
        if conn.pending is not None:
            conn.pending = memoryview(bytes(conn.pending) + data)
        else:
            conn.pending = memoryview(data)
        flush(conn)

    def send_connect(conn: Conn) -> None:
        packet = connect_packet(cfg, conn.index)
        write(conn, conn.tls.seal([packet]) if conn.tls is not None else packet)
        conn.state = "connack"

    def handshake(conn: Conn, data: bytes = b"") -> None:
        tls = conn.tls
        assert tls is not None
        if data:
            tls.incoming.write(data)
        done = tls.handshake()
        out = tls.pending()
        if out:
            write(conn, out)
        if done:
            send_connect(conn)

    def report(now: float) -> None:
        nonlocal next_report
        if progress is not None and now >= next_report:
            next_report = now + PROGRESS_INTERVAL
            progress(
                {
                    "ok": len(ok),
                    "failed": sum(errors.values()),
                    "in_flight": len(active),
                    "waiting": len(todo),
                }
            )

    while (todo or active) and time.monotonic() < deadline:
        now = time.monotonic()
        allowed = len(indices) if rate <= 0 else concurrency + int(rate * (now - t_start))
        while todo and len(active) < concurrency and started < allowed:
            index = todo.popleft()
            started += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                if cfg.source_hosts:
                    sock.bind((cfg.source_hosts[index % len(cfg.source_hosts)], 0))
                rc = sock.connect_ex((cfg.host, cfg.port))
            except OSError as exc:
                errors[err_key(exc)] += 1
                sock.close()
                continue
            if rc not in (0, errno.EINPROGRESS):
                errors[err_key(OSError(rc, os.strerror(rc)))] += 1
                sock.close()
                continue
            conn = Conn(sock)
            conn.index = index
            sel.register(sock, selectors.EVENT_WRITE, conn)
            active[id(conn)] = conn
        # short waits while the pacing holds starts back, so that they start on time
        wait = 0.05 if todo and len(active) < concurrency else 0.5
        for key, ev in sel.select(timeout=min(wait, max(0.0, deadline - time.monotonic()))):
            conn = key.data
            if id(conn) not in active:
                continue
            try:
                if conn.state == "connecting":
                    rc = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if rc:
                        fail(conn, OSError(rc, os.strerror(rc)))
                        continue
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if ctx is not None:
                        conn.tls = TlsWire(ctx, cfg.server_hostname)
                        conn.state = "tls"
                        handshake(conn)
                    else:
                        send_connect(conn)
                    watch(conn)
                    continue
                if ev & selectors.EVENT_WRITE:
                    flush(conn)
                if not ev & selectors.EVENT_READ:
                    watch(conn)
                    continue
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    watch(conn)
                    continue
                if conn.state == "tls":
                    if not data:
                        fail(conn, "closed during the TLS handshake")
                        continue
                    handshake(conn, data)
                    watch(conn)
                    continue
                if not data:
                    fail(conn, "closed before CONNACK")
                    continue
                if conn.tls is not None:
                    data = conn.tls.feed(data)
                conn.rbuf += data
                frames = wire.split_frames(conn.rbuf)
                if not frames:
                    watch(conn)
                    continue
                first, body = frames[0]
                if first != wire.CONNACK or len(body) < 2:
                    fail(conn, f"expected CONNACK, got 0x{first:02x}")
                elif body[1] != 0:
                    fail(conn, f"CONNACK rc={body[1]}")
                elif conn.pending is not None:
                    fail(conn, "CONNACK before the CONNECT was sent")
                else:
                    sel.unregister(conn.sock)
                    active.pop(id(conn))
                    conn.state = "open"
                    ok.append(conn)
                    last = time.monotonic()
            except (OSError, ValueError) as exc:
                fail(conn, exc)
        report(time.monotonic())
    for conn in list(active.values()):
        fail(conn, "connect timeout")
    if todo:
        errors["not attempted (timeout)"] += len(todo)
    sel.close()
    return ok, dict(errors), last


def subscribe_all(cfg: MqttLoad, conns: list[Conn], errors: dict[str, int]) -> list[Conn]:
    """SUBSCRIBE each connection to ``<subscribe_prefix><index>`` (QoS 0), wait for SUBACKs."""
    kept: list[Conn] = []
    for c in conns:
        try:
            packet = wire.subscribe(f"{cfg.subscribe_prefix}{c.index}")
            send_now(c.sock, c.tls.seal([packet]) if c.tls is not None else packet)
            deadline = time.monotonic() + cfg.connect_timeout
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("no SUBACK")
                select.select([c.sock], [], [], 0.1)
                try:
                    data = c.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("closed before SUBACK")
                c.rbuf += c.tls.feed(data) if c.tls is not None else data
                frames = wire.split_frames(c.rbuf)
                if any(f == wire.SUBACK for f, _b in frames):
                    break
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
            except BlockingIOError:
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
            c.rbuf += c.tls.feed(data) if c.tls is not None else data
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
    """DISCONNECT and close every connection without ever waiting: an idle socket has room
    for the few bytes, and one that has none (a server that stopped reading) is closed
    anyway.  Blocking sends here once cost up to 0.5 s per connection, minutes for a
    worker holding thousands of connections to a busy server."""
    for c in conns:
        try:
            c.sock.setblocking(False)
            if c.tls is not None:
                c.sock.send(c.tls.seal([wire.DISCONNECT_BYTES]))
            else:
                c.sock.send(wire.DISCONNECT_BYTES)
        except (OSError, ValueError):
            pass
        c.sock.close()
