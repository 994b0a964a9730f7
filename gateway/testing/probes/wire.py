"""Raw clients for the probes: plain TCP or TLS (the stdlib ``ssl`` module over trio's
``SSLStream``, a TLS implementation independent of the gateway's pyOpenSSL stream), bound to
a chosen loopback source address so that the live log can be filtered on it.

Only 127.0.0.x is ever connected to or bound: :func:`_check_loopback` refuses anything else.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence

import msgspec
import trio

__all__ = [
    "Answer",
    "client_context",
    "open_plain",
    "open_tls",
    "read_exactly",
    "read_until_closed",
]

MAX_ANSWER = 1 << 20  # bytes kept of one answer


class Answer(msgspec.Struct, frozen=True):
    """What came back on a connection until it ended or the wait ran out.

    ``closed``: the peer ended the connection (EOF, reset or a TLS alert);
    ``elapsed``: seconds from the start of the read to the end (or the timeout)."""

    data: bytes
    closed: bool
    elapsed: float
    error: str | None = None


def _check_loopback(*addresses: str) -> None:
    for a in addresses:
        if not ipaddress.ip_address(a).is_loopback:
            raise ValueError(f"probes only talk to loopback addresses, not {a}")


def client_context(
    ca: str,
    *,
    alpn: Sequence[str] | None = None,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A verifying client context trusting ``ca`` (the gateway's development CA)."""
    ctx = ssl.create_default_context(cafile=ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


async def open_plain(host: str, port: int, *, local: str | None = None) -> trio.SocketStream:
    _check_loopback(host, *([local] if local else []))
    return await trio.open_tcp_stream(host, port, local_address=local)


async def open_tls(
    host: str,
    port: int,
    server_name: str,
    ctx: ssl.SSLContext,
    local: str | None = None,
    *,
    handshake: bool = True,
) -> trio.SSLStream[trio.SocketStream]:
    """Connect and (unless told not to) complete the handshake; raises
    ``trio.BrokenResourceError`` when the gateway refuses it."""
    tcp = await open_plain(host, port, local=local)
    stream = trio.SSLStream(tcp, ctx, server_hostname=server_name)
    if handshake:
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return stream


async def read_exactly(stream: trio.abc.Stream, n: int, *, timeout: float) -> bytes:
    """Up to ``n`` bytes: fewer only when the peer closed or the wait ran out."""
    buf = bytearray()
    with trio.move_on_after(timeout):
        while len(buf) < n:
            try:
                chunk = await stream.receive_some(n - len(buf))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not chunk:
                break
            buf += chunk
    return bytes(buf)


async def read_until_closed(stream: trio.abc.Stream, *, timeout: float) -> Answer:
    """Everything the peer sends until it closes, or until ``timeout`` seconds passed."""
    buf = bytearray()
    start = trio.current_time()
    error: str | None = None
    closed = False
    with trio.move_on_after(timeout):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                error = repr(exc.__cause__ or exc)
                closed = True
                break
            except trio.ClosedResourceError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            if len(buf) < MAX_ANSWER:
                buf += chunk
    return Answer(bytes(buf), closed, trio.current_time() - start, error)
