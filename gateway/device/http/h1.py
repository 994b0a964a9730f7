"""The HTTP/1.1 fast path: one Trio task per connection drives the sans-IO request assembler
(``gateway.device.http.assembler``, llhttp) and calls the device app directly.

Theory of operation
===================

hypercorn spends most of a device request in its own machinery — a task per request, ASGI
event objects, h11 in pure Python, a lock and a shielded scope per write (bench/profiles.md,
http-plain).  This driver keeps what the application needs and nothing else:

* **One task, one loop.**  Read (at most ``MAX_RECV``), feed the assembler, answer every
  complete request in order, write the answers with one ``send_all``, read again.  The
  device app (:meth:`DeviceApp.handle`) gets the same ASGI-shaped ``receive``/``send`` it
  gets from hypercorn, so there is one application and the answers are the same bytes
  (``tests/conformance/http/test_05_same_answers.py``): :class:`_Responder` frames them as
  h11 would (status line without reason phrase, the app's headers, ``date``, a
  ``Connection: close`` when the request did not keep alive, no body for ``HEAD``, 204 and
  304).
* **Pipelined writes share one submission.**  Plain writes (``POST`` on the alias path, no
  query, body complete in the buffer) that arrive back to back are staged and committed
  together (:meth:`DeviceApp.stage_write`, :meth:`DeviceApp.commit_writes`): one store
  submission, each answered ``204`` in order after the commit.
* **Deadlines** (docs/decisions.md): a request head must complete within ``head_timeout_s``
  of its first byte, else ``408`` and close; a body must make progress every
  ``body_timeout_s`` (the app answers ``408``); a connection with no request in progress is
  closed after ``keep_alive_s`` of silence, without an answer.  One cancel scope serves the
  loop's reads (its deadline moves; MQTT's reader does the same); body and watch reads
  inside a request get their own.
* **Bounded pipelining.**  At most ``MAX_BATCH`` writes per submission; while a request is
  being answered (a long-poll watching for disconnect) reading stops once
  ``max_pipelined_bytes`` of later input waits parsed.
* **What it does not serve** goes to hypercorn unchanged (:class:`HypercornHTTP`): the
  HTTP/2 prior-knowledge preface and requests with ``Upgrade`` (``h2c``, websocket) or
  ``CONNECT``, with the bytes read so far replayed in front of the stream.  HTTP/2 by ALPN
  never reaches this module.
* **Closing.**  After a framing error, a ``Connection: close`` with requests still queued
  behind it, or an answer before the whole body arrived, the connection lingers: it
  half-closes when it can, then reads and drops the client's bytes until EOF or a short
  silence, so the client reads the answer instead of a reset.

Draining: the connection registers with the front door (``DrainingStream``) and reads the
wrapped stream directly; ``drain()`` ends the pending read as at EOF.  Requests in flight
(a write waiting for its commit) finish and are answered.

Errors: malformed framing gets hypercorn's error shape (``content-length: 0``,
``connection: close``) and the connection closes; an exception from the application is a
bug: logged, ``500`` if nothing was sent, and the connection closes.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
from collections.abc import Awaitable, Callable

import trio

from gateway.clock import US_PER_S, now_us
from gateway.device.http.app import ALIAS_PATH, DeviceApp, StagedWrite
from gateway.device.http.asgi import HttpConnection, Message, Request
from gateway.device.http.assembler import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    Body,
    RequestAssembler,
    RequestHead,
    Upgrade,
)
from gateway.errors import GatewayError, RequestTimeout
from gateway.frontdoor.connection import DrainingStream
from gateway.frontdoor.sniff import ReplayStream
from gateway.model import LogRecord, Protocol

__all__ = ["MAX_BATCH", "MAX_RECV", "H1Limits", "HttpDate", "serve_h1"]

log = logging.getLogger(__name__)

MAX_RECV = 65536  # bytes per read
MAX_BATCH = 128  # pipelined writes per store submission
FLUSH_AT = 65536  # a streamed answer is written out whenever this much is buffered
LINGER_S = 2.0  # a closing connection drops the client's bytes at most this long...
LINGER_QUIET_S = 0.25  # ...or until it has been silent this long
LINGER_MAX_BYTES = 1 << 20  # ...or this many bytes
_PRI = b"PRI "  # the HTTP/2 connection preface starts "PRI * HTTP/2.0" (RFC 9113 §3.4)

Fallback = Callable[[trio.abc.Stream, HttpConnection], Awaitable[None]]
DebugLog = Callable[[LogRecord], None]


class H1Limits:
    """Deadlines (seconds) and sizes of the fast path (docs/decisions.md)."""

    __slots__ = (
        "body_timeout_s",
        "head_timeout_s",
        "keep_alive_s",
        "max_head_bytes",
        "max_pipelined_bytes",
    )

    def __init__(
        self,
        *,
        head_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        keep_alive_s: float = 120.0,
        max_head_bytes: int = 16 * 1024,
        max_pipelined_bytes: int = 64 * 1024,
    ) -> None:
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.keep_alive_s = keep_alive_s
        self.max_head_bytes = max_head_bytes
        self.max_pipelined_bytes = max_pipelined_bytes


# -- response framing (what h11 writes for hypercorn) -----------------------------------------

_STATUS_LINES = {code: b"HTTP/1.1 %d \r\n" % code for code in range(100, 600)}


class HttpDate:
    """The ``date`` header line, formatted once per second (RFC 9110 §6.6.1)."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        second = now_us() // US_PER_S
        if second != self._second:
            stamp = email.utils.formatdate(second, usegmt=True).encode("ascii")
            self._second = second
            self._line = b"date: " + stamp + b"\r\n"
        return self._line

    def framing_error(self, status: int) -> bytes:
        """hypercorn's answer to a request h11 could not parse (and ours to llhttp's
        refusals and to heads that timed out)."""
        return (
            _STATUS_LINES[status]
            + b"content-length: 0\r\nconnection: close\r\n"
            + self.line()
            + b"\r\n"
        )


class _Responder:
    """``send`` for one request: frames the app's ASGI messages into ``out`` as h11 frames
    them for hypercorn (RFC 9112 §6, §9.6).  ``close_after`` says the connection must end
    after this answer; ``complete`` that the answer is whole."""

    __slots__ = (
        "_body_allowed",
        "_chunked",
        "_date",
        "_flush",
        "_head_request",
        "_http10",
        "_keep_alive",
        "close_after",
        "complete",
        "out",
        "started",
    )

    def __init__(
        self,
        head: RequestHead,
        out: bytearray,
        flush: Callable[[], Awaitable[None]] | None,
        date: HttpDate,
    ) -> None:
        self.out = out
        self._date = date
        self._flush = flush
        self._head_request = head.method == "HEAD"
        self._http10 = head.http_version == "1.0"
        self._keep_alive = head.keep_alive
        self._body_allowed = False
        self._chunked = False
        self.started = False
        self.complete = False
        self.close_after = not head.keep_alive

    async def send(self, message: Message) -> None:
        kind = message["type"]
        out = self.out
        if kind == "http.response.body":
            if not self.started or self.complete:
                return
            body = message.get("body", b"")
            if body and self._body_allowed:
                if self._chunked:
                    out += b"%x\r\n" % len(body)
                    out += body
                    out += b"\r\n"
                else:
                    out += body
            if not message.get("more_body", False):
                if self._chunked:
                    out += b"0\r\n\r\n"
                self.complete = True
            elif self._flush is not None and len(out) >= FLUSH_AT:
                await self._flush()
        elif kind == "http.response.start" and not self.started:
            self.started = True
            self._start(int(message["status"]), message.get("headers", ()))

    def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        out = self.out
        out += _STATUS_LINES[status]
        bodiless = status < 200 or status == 204 or status == 304
        has_length = False
        connection: list[bytes] = []
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            elif name == b"connection":
                connection.append(value)
        close_header = False
        if not bodiless and not has_length:  # unknown length: h11 chunks, or closes on 1.0
            if self._http10:
                if not self._head_request:
                    close_header = True
            else:
                self._chunked = not self._head_request
                headers = [*headers, (b"transfer-encoding", b"chunked")]
        if not self._keep_alive or close_header:
            tokens = {t.strip().lower() for v in connection for t in v.split(b",") if t.strip()}
            tokens.discard(b"keep-alive")
            tokens.add(b"close")
            if connection:
                headers = [(n, v) for n, v in headers if n != b"connection"]
            for name, value in headers:
                out += name + b": " + value + b"\r\n"
            out += self._date.line()
            out += b"Connection: " + b", ".join(sorted(tokens)) + b"\r\n\r\n"
            self.close_after = True
        else:
            for name, value in headers:
                out += name + b": " + value + b"\r\n"
            out += self._date.line()
            out += b"\r\n"
            if any(b"close" in v.lower() for v in connection):
                self.close_after = True
        self._body_allowed = not (bodiless or self._head_request)


# -- the connection ---------------------------------------------------------------------------


class _H1Connection:
    """One connection's loop (see the module docstring)."""

    __slots__ = (
        "_date",
        "_debug",
        "_draining",
        "_fallback",
        "_first",
        "_head_deadline",
        "_linger",
        "_out",
        "_read_scope",
        "_reading",
        "_ready_fd",
        "app",
        "assembler",
        "conn",
        "limits",
        "raw",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: HttpConnection,
        app: DeviceApp,
        limits: H1Limits,
        fallback: Fallback,
        debug: DebugLog,
        date: HttpDate,
    ) -> None:
        self._date = date
        self.stream = stream
        # a registered drain target reads the wrapped stream directly (no scope per read)
        self.raw = stream.stream if isinstance(stream, DrainingStream) else stream
        # a plain socket is waited on before reading between requests (the read right after
        # an answer would find nothing: EAGAIN), then read with one read(2)
        self._ready_fd = self.raw.socket.fileno() if isinstance(self.raw, trio.SocketStream) else -1
        self.conn = conn
        self.app = app
        self.limits = limits
        self.assembler = RequestAssembler(max_head_bytes=limits.max_head_bytes)
        self._fallback = fallback
        self._debug = debug
        self._out = bytearray()
        self._draining = False
        self._reading = False
        self._read_scope: trio.CancelScope | None = None
        self._head_deadline = math.inf
        self._first: bytes | None = b""  # None once the first bytes were judged
        self._linger = False

    # -- draining (DrainTarget) ---------------------------------------------------------

    def drain(self) -> None:
        """The gateway shuts down: the pending read ends as at EOF, later reads too."""
        self._draining = True
        if self._reading and self._read_scope is not None:
            self._read_scope.cancel()

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        stream = self.stream
        draining = stream if isinstance(stream, DrainingStream) else None
        if draining is not None:
            draining.add_drain_target(self)
        handed_over: bytes | None = None
        try:
            handed_over = await self._serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("connection %s: %r", self.conn.info.connection_id, exc)
        finally:
            if draining is not None:
                draining.remove_drain_target(self)
            if handed_over is None:
                self.conn.close()  # waiting long-polls end (the full stack closes its own)
        if handed_over is not None:
            await self._fallback(ReplayStream(stream, handed_over), self.conn)
        elif self._linger:
            await self._linger_close()

    async def _serve(self) -> bytes | None:
        """Answer requests until the connection ends; returns the bytes to replay when the
        connection goes to the full stack instead."""
        asm = self.assembler
        scope = trio.CancelScope()
        self._read_scope = scope
        with scope:
            while True:
                try:
                    event = asm.next_event()
                except GatewayError as exc:  # malformed framing
                    await self._refuse_framing(exc)
                    return None
                if event is NEED_DATA:
                    data = await self._read_main(scope)
                    if data is None:
                        break  # the deadline passed or draining began: see below
                    if self._first is not None:  # the connection's first bytes
                        data = self._first + data
                        if len(data) < len(_PRI) and data and _PRI.startswith(data):
                            if not self._first:
                                self._head_deadline = (
                                    trio.current_time() + self.limits.head_timeout_s
                                )
                            self._first = data  # could still be the HTTP/2 preface
                            continue
                        self._first = None
                        if data.startswith(_PRI):
                            return data  # HTTP/2 prior knowledge: hypercorn's
                    asm.receive_data(data)
                    if asm.head_began:
                        self._head_deadline = trio.current_time() + self.limits.head_timeout_s
                    continue
                if type(event) is RequestHead:
                    if not await self._request(event):
                        return None
                elif type(event) is Upgrade:
                    await self._flush()
                    return event.data
                else:  # CONNECTION_CLOSED (a body event cannot be left over: see _request)
                    return None
        # the read was cancelled: the deadline, or draining (as at EOF)
        if (asm.in_head or self._first) and not self._draining:
            await self._refuse_framing(
                RequestTimeout(f"request head incomplete after {self.limits.head_timeout_s:g} s")
            )
        return None

    async def _read_main(self, scope: trio.CancelScope) -> bytes | None:
        """A read between requests or inside a head, under the keep-alive or head deadline
        (None: cancelled by it or by draining; b"": EOF)."""
        if self._draining:
            return None
        asm = self.assembler
        if asm.in_head or self._first:
            scope.deadline = self._head_deadline
        else:
            scope.deadline = trio.current_time() + self.limits.keep_alive_s
        self._reading = True
        data: bytes | bytearray
        try:
            if self._ready_fd >= 0 and asm.idle:
                data = await _read_when_ready(self._ready_fd)
            else:
                data = await self.raw.receive_some(MAX_RECV)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        finally:
            self._reading = False
        if scope.cancel_called:
            return None
        scope.deadline = math.inf
        return bytes(data) if type(data) is not bytes else data

    async def _read_inner(self, deadline: float) -> bytes | None:
        """A read inside a request (body, or watching for disconnect) with its own scope;
        None when ``deadline`` passed, b"" at EOF or when draining."""
        if self._draining:
            await trio.lowlevel.checkpoint()
            return b""
        outer = self._read_scope
        with trio.CancelScope(deadline=deadline) as scope:
            self._read_scope = scope
            self._reading = True
            try:
                data = await self.raw.receive_some(MAX_RECV)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            finally:
                self._reading = False
                self._read_scope = outer
            return bytes(data) if type(data) is not bytes else data
        return b"" if self._draining else None

    # -- one request (or a burst of writes) ---------------------------------------------

    async def _request(self, head: RequestHead) -> bool:
        """Answer ``head`` (and the plain writes queued behind it); False when the
        connection must end."""
        if _plain_write(head):
            body = self.assembler.take_body()
            if body is not None:
                return await self._write_burst(head, body)
        out = self._out
        if head.expect_continue:
            out += _STATUS_LINES[100] + self._date.line() + b"\r\n"
            await self._flush()
        responder = _Responder(head, out, self._flush, self._date)
        request = Request(
            self.conn, head.method, head.path, head.query, head.headers, head.head_size
        )
        exchange = _Exchange(self)
        try:
            await self.app.handle(request, exchange.receive, responder.send)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception:
            log.exception(
                "device request %s %s failed on connection %s",
                head.method,
                head.path,
                self.conn.info.connection_id,
            )
            if not responder.started:
                out += self._date.framing_error(500)
            self._linger = True
            await self._flush()
            return False
        if exchange.broken:
            await self._flush()
            return False
        done = exchange.done or self._discard_body()
        await self._flush()
        if not responder.complete or not done:
            self._linger = not self.assembler.closed
            return False
        if responder.close_after:
            self._linger = not self.assembler.idle
            return False
        return True

    async def _write_burst(self, head: RequestHead, body: bytes) -> bool:
        """Plain writes back to back: staged, one submission, answered in order."""
        asm = self.assembler
        app = self.app
        conn = self.conn
        slots: list[bytearray] = []
        responders: list[_Responder] = []
        staged: list[StagedWrite] = []
        while True:
            slot = bytearray()
            slots.append(slot)
            responder = _Responder(head, slot, None, self._date)
            responders.append(responder)
            request = Request(
                conn, head.method, head.path, head.query, head.headers, head.head_size
            )
            write = await app.stage_write(request, body, responder.send)
            if write is not None:
                staged.append(write)
            if len(slots) >= MAX_BATCH:
                break
            nxt = asm.peek_head()
            if nxt is None or not _plain_write(nxt):
                break
            taken = asm.take_request()
            if taken is None:  # its body is still coming: the loop answers it alone
                break
            head, body = taken
        out = self._out
        try:
            await app.commit_writes(staged)
        except Exception:
            log.exception("device writes failed on connection %s", conn.info.connection_id)
            for slot, responder in zip(slots, responders, strict=True):
                if not responder.complete:
                    out += self._date.framing_error(500)
                    break
                out += slot
            self._linger = True
            await self._flush()
            return False
        for slot in slots:
            out += slot
        await self._flush()
        return True

    def _discard_body(self) -> bool:
        """Drop what is queued of a body the app did not read; True if the whole body was
        here (the connection can carry the next request)."""
        asm = self.assembler
        while True:
            try:
                event = asm.next_event()
            except GatewayError:
                return False
            if event is END_OF_MESSAGE:
                return True
            if type(event) is not Body:
                return False  # NEED_DATA or EOF: the rest of the body is not here

    async def _flush(self) -> None:
        out = self._out
        if out:
            data = bytes(out)
            out.clear()
            await self.raw.send_all(data)

    async def _refuse_framing(self, exc: GatewayError) -> None:
        """Answer a request the assembler refused (or whose head timed out) and end."""
        status = int(exc.http_status)
        info = self.conn.info
        self._debug(
            LogRecord(
                kind="debug",
                timestamp=now_us(),
                connector_id=info.connector_id,
                ip=info.peer_ip or None,
                connection_id=info.connection_id,
                protocol=Protocol.HTTP.value,
                event="http_refused",
                reason=exc.code,
                detail=f"-> {status}: {exc.message}",
            )
        )
        self._out += self._date.framing_error(status)
        self._linger = True
        await self._flush()

    async def _linger_close(self) -> None:
        """Half-close if the transport can, then drop the client's bytes until EOF, a
        short silence or the caps, so it reads our last answer rather than a reset."""
        raw = self.raw
        send_eof = getattr(raw, "send_eof", None)
        try:
            if send_eof is not None:
                await send_eof()
            dropped = 0
            with trio.move_on_after(LINGER_S):
                while dropped < LINGER_MAX_BYTES and not self._draining:
                    data: bytes | bytearray = b""
                    with trio.move_on_after(LINGER_QUIET_S):
                        data = await raw.receive_some(MAX_RECV)
                    if not data:
                        return
                    dropped += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            return


class _Exchange:
    """``receive`` for one request: the body from the assembler (reading more under the
    body deadline), then — like ASGI — ``http.disconnect`` once the client goes away
    (reading on, and queueing what follows, while the app waits: a long-poll)."""

    __slots__ = ("_c", "broken", "done")

    def __init__(self, c: _H1Connection) -> None:
        self._c = c
        self.done = False  # the whole body was taken
        self.broken = False  # the body's framing broke: answered and ended here

    async def receive(self) -> Message:
        c = self._c
        asm = c.assembler
        if self.done:
            return await self._watch()
        deadline = trio.current_time() + c.limits.body_timeout_s
        while True:
            try:
                event = asm.next_event()
            except GatewayError as exc:  # a broken chunk: hypercorn's 400, the app sees EOF
                self.broken = True
                await c._refuse_framing(exc)
                return _DISCONNECT
            if type(event) is Body:
                if asm.take_end():
                    self.done = True
                    return {"type": "http.request", "body": event.data, "more_body": False}
                return {"type": "http.request", "body": event.data, "more_body": True}
            if event is END_OF_MESSAGE:
                self.done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if event is CONNECTION_CLOSED:
                return _DISCONNECT
            data = await c._read_inner(deadline)
            if data is None:
                raise RequestTimeout(f"request body stalled for {c.limits.body_timeout_s:g} s")
            asm.receive_data(data)
            if data:
                deadline = trio.current_time() + c.limits.body_timeout_s

    async def _watch(self) -> Message:
        c = self._c
        asm = c.assembler
        while not asm.closed and asm.queued_bytes <= c.limits.max_pipelined_bytes:
            data = await c._read_inner(math.inf)
            if not data:
                asm.receive_data(b"")
                return _DISCONNECT
            asm.receive_data(data)
        await trio.sleep_forever()  # enough queued (or the stream ended in an error/upgrade)
        raise AssertionError("unreachable")


_DISCONNECT: Message = {"type": "http.disconnect"}


async def _read_when_ready(fd: int) -> bytes:
    """One read(2) of a plain TCP socket once it is readable (the wait is the checkpoint;
    trio's own ``recv`` would try first, fail with EAGAIN and yield once more)."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, MAX_RECV)
        except BlockingIOError:
            continue  # woken without data (spurious): wait again
        except OSError as exc:  # reset by the peer and the like: the stream is broken
            raise trio.BrokenResourceError(f"read failed: {exc!r}") from exc


def _plain_write(head: RequestHead) -> bool:
    """A write that can share a submission: ``POST`` on the alias path, no query (not a
    hybrid read), keep-alive, no ``Expect``."""
    return (
        head.method == "POST"
        and head.path == ALIAS_PATH
        and not head.query
        and head.keep_alive
        and not head.expect_continue
    )


async def serve_h1(
    stream: trio.abc.Stream,
    conn: HttpConnection,
    *,
    app: DeviceApp,
    limits: H1Limits,
    fallback: Fallback,
    debug: DebugLog,
    date: HttpDate,
) -> None:
    """Serve one HTTP/1.x connection to its end (or hand it to ``fallback``).  Never
    raises for peer misbehaviour; the stream is closed by the caller (the front door)."""
    await _H1Connection(stream, conn, app, limits, fallback, debug, date).run()
