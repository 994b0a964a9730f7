"""Plumbing shared by the device API modules and both transports that carry it: the
per-connection context, the request view, responses and body reading.

Two transports call :meth:`gateway.device.http.app.DeviceApp.handle`: the HTTP/1.1 fast
path (``gateway.device.http.h1``) and hypercorn (HTTP/2, upgrades, the fast path switched
off) through the ASGI adapter.  Both speak ASGI's message vocabulary to the application —
``receive()`` returns ``http.request`` / ``http.disconnect`` messages, ``send()`` takes
``http.response.start`` / ``http.response.body`` — so the application code is one, and a
response is two ``send`` calls with pre-built header tuples.  A request is a
:class:`Request`: method, decoded path, raw query and a ``dict`` of its headers (names
lower-cased by either transport).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import trio

from gateway.errors import GatewayError, RequestTimeout, TooLarge
from gateway.model import ConnectionInfo, Protocol
from gateway.store.api import EventMeta

__all__ = [
    "CSV_CT",
    "FORM_CT",
    "STATE_KEY",
    "TEXT_CT",
    "ClientGone",
    "HttpConnection",
    "Message",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "check_declared",
    "iter_body",
    "read_body",
    "respond",
    "respond_empty",
    "timed_receive",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STATE_KEY = "gateway.http_connection"  # scope["state"] key of the HttpConnection

SERVER = (b"server", b"gateway")
FORM_CT = (b"content-type", b"application/x-www-form-urlencoded; charset=utf-8")
TEXT_CT = (b"content-type", b"text/plain; charset=utf-8")
CSV_CT = (b"content-type", b"text/csv; charset=utf-8")

# Bodiless answers are the hot path (every write is a 204): their messages are built once.
# hypercorn copies the header list into its own event, so sharing these is safe.
_EMPTY_BODY: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_BODILESS: dict[int, Message] = {
    status: {"type": "http.response.start", "status": status, "headers": [SERVER]}
    for status in (204, 304)
}


class ClientGone(Exception):
    """The client went away before the request was complete: answer nothing."""


class HttpConnection:
    """One device HTTP connection, as the front door saw it (created by the transport that
    serves it and shared by every request on the connection, including the concurrent
    streams of an h2 connection).

    ``close()`` is called by the front door when the connection's read side ends; it cancels
    the long-polls still waiting on it, so a poller that went away holds no task, no
    channel and no timer for the rest of its timeout.
    """

    __slots__ = ("_polls", "closed", "info", "meta", "route", "server")

    def __init__(self, info: ConnectionInfo) -> None:
        self.info = info
        # the address the device connected to (a trusted proxy's, from its PROXY header):
        # ASGI's "server" and the legacy /ip answer
        peer = info.peer
        self.server: tuple[str, int] | None = (
            (peer.server_ip, peer.server_port) if peer.server_ip else None
        )
        self.meta = EventMeta(
            connection_id=info.connection_id, ip=info.peer_ip or None, protocol=Protocol.HTTP.value
        )
        self.closed = False
        # (host header, registry version, connector id): the last routing decision
        self.route: tuple[bytes | None, int, str] | None = None
        self._polls: set[trio.CancelScope] = set()

    def add_poll(self, scope: trio.CancelScope) -> None:
        if self.closed:
            scope.cancel()
        self._polls.add(scope)

    def discard_poll(self, scope: trio.CancelScope) -> None:
        self._polls.discard(scope)

    def close(self) -> None:
        self.closed = True
        for scope in self._polls:
            scope.cancel()
        self._polls.clear()


class Request:
    """The parts of a request the device API looks at: method, percent-decoded path, raw
    query, headers (lower-case names; a repeated name keeps its last value, none of ours
    may repeat) and ``head_size``, the sum of the header names' and values' lengths."""

    __slots__ = ("conn", "head_size", "headers", "method", "path", "query")

    def __init__(
        self,
        conn: HttpConnection,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        head_size: int,
    ) -> None:
        self.conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.headers: dict[bytes, bytes] = dict(headers)
        self.head_size = head_size

    @classmethod
    def from_scope(cls, scope: Scope, conn: HttpConnection) -> Request:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        size = sum(len(k) + len(v) for k, v in headers)
        return cls(conn, scope["method"], scope["path"], scope["query_string"], headers, size)

    def header(self, name: bytes) -> str | None:
        raw = self.headers.get(name)
        return None if raw is None else raw.decode("latin-1").strip()

    def content_length(self) -> int | None:
        raw = self.headers.get(b"content-length")
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            return None


async def respond(
    send: Send, status: int, body: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """A complete response with a body (``Content-Length`` set)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [SERVER, (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def respond_empty(send: Send, status: int = 204) -> None:
    """A 204 or 304 (no body, no ``Content-Length``: RFC 9110 §8.6)."""
    await send(_BODILESS[status])
    await send(_EMPTY_BODY)


async def read_body(receive: Receive, *, cap: int, declared: int | None) -> bytes:
    """The whole request body, at most ``cap`` bytes.

    Raises ``TooLarge`` (413) as soon as the declared length or the bytes received
    pass the cap (the rest is never buffered), ``ClientGone`` on disconnect; the transport's
    ``receive`` raises ``RequestTimeout`` (408) when the body stalls.
    """
    check_declared(declared, cap)
    first = b""
    chunks: list[bytes] | None = None
    size = 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise ClientGone
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > cap:
                raise TooLarge(f"request body above the limit of {cap} bytes")
            if not first:
                first = chunk
            else:
                if chunks is None:
                    chunks = [first]
                chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks) if chunks is not None else first


def check_declared(declared: int | None, cap: int) -> None:
    """Refuse (413) a body whose ``Content-Length`` is above ``cap`` before reading it."""
    if declared is not None and declared > cap:
        raise TooLarge(f"request body of {declared} bytes is above the limit of {cap}")


def timed_receive(receive: Receive, timeout_s: float) -> Receive:
    """``receive`` with the body progress deadline: each message of the request body must
    arrive within ``timeout_s`` of the previous one, else ``RequestTimeout`` (408).  Once
    the body is complete, waiting (for ``http.disconnect``) has no deadline."""
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        with trio.move_on_after(timeout_s):
            msg = await receive()
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                complete = True
            return msg
        raise RequestTimeout(f"request body stalled for {timeout_s:g} s")

    return timed


async def iter_body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives (uploads: never buffered whole)."""
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise ClientGone
        chunk = msg.get("body", b"")
        if chunk:
            yield chunk
        if not msg.get("more_body", False):
            return


def status_of(exc: GatewayError) -> int:
    return int(getattr(exc, "http_status", 500))
