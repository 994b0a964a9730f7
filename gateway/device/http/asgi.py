"""Plumbing shared by the device API modules: the per-connection context the front door
attaches to the ASGI scope, the request view, raw ASGI responses and body reading.

No framework on this path (the dev-port write loop is what bench/ measures): a request is
the ASGI scope plus a ``dict`` of its headers (names arrive lower-cased from h11 and h2),
and responses are two ``send`` calls with pre-built header tuples.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import trio

from gateway.errors import GatewayError
from gateway.model import ConnectionInfo, Protocol
from gateway.services.content import TooLarge
from gateway.store.api import EventMeta

__all__ = [
    "CSV_CT",
    "FORM_CT",
    "STATE_KEY",
    "TEXT_CT",
    "ClientGone",
    "HttpConnection",
    "Receive",
    "Request",
    "Send",
    "iter_body",
    "read_body",
    "respond",
    "respond_empty",
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
    """One device HTTP connection, as the front door saw it (created by
    ``gateway.device.http.hypercorn_server`` and shared by every request on the connection,
    including the concurrent streams of an h2 connection).

    ``close()`` is called by the front door when the connection's read side ends; it cancels
    the long-polls still waiting on it, so a poller that went away holds no task, no
    channel and no timer for the rest of its timeout.
    """

    __slots__ = ("_polls", "closed", "info", "meta", "route", "server")

    def __init__(self, info: ConnectionInfo, server: tuple[str, int] | None) -> None:
        self.info = info
        self.server = server
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
    """The parts of an ASGI HTTP scope the device API looks at."""

    __slots__ = ("conn", "headers", "method", "path", "query")

    def __init__(self, scope: Scope, conn: HttpConnection) -> None:
        self.conn = conn
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope["query_string"]
        # Duplicate header names keep the last value; none of ours may repeat.
        self.headers: dict[bytes, bytes] = dict(scope["headers"])

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

    Raises ``TooLarge`` (413) as soon as the declared length or the bytes received pass
    the cap (the rest is never buffered), ``ClientGone`` on disconnect.
    """
    if declared is not None and declared > cap:
        raise TooLarge(f"request body of {declared} bytes is above the limit of {cap}")
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
