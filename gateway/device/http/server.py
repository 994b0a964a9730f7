"""The device port's HTTP handler: which server answers a connection.

HTTP/1.x goes to the fast path (``gateway.device.http.h1``: llhttp and the device app, no
ASGI server in between), which hands upgrades and the HTTP/2 preface to hypercorn; HTTP/2
by ALPN goes to hypercorn (``gateway.device.http.hypercorn_server``) directly.  With
``fast_path=False`` hypercorn serves everything, as before the fast path existed (an
operator's escape hatch, and the reference the answer tests compare against).
"""

from __future__ import annotations

import trio

from gateway.device.http.app import DeviceApp
from gateway.device.http.asgi import HttpConnection
from gateway.device.http.h1 import H1Limits, HttpDate, serve_h1
from gateway.device.http.hypercorn_server import HypercornHTTP
from gateway.frontdoor.connection import ServeFn
from gateway.model import ConnectionInfo
from gateway.services.bundle import Services

__all__ = ["H1Limits", "make_http_server"]


def make_http_server(
    services: Services, *, fast_path: bool = True, limits: H1Limits | None = None
) -> ServeFn:
    """The front door's HTTP handler: ``serve(stream, info)`` runs one connection to its
    end.  The stream is closed by the caller (the front door)."""
    limits = limits if limits is not None else H1Limits()
    app = DeviceApp(services, body_timeout_s=limits.body_timeout_s)
    hypercorn = HypercornHTTP(app, keep_alive_s=limits.keep_alive_s)
    date = HttpDate()
    debug = services.debug

    async def serve(stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        conn = HttpConnection(info)
        if not fast_path or info.alpn == "h2":
            await hypercorn.serve(stream, conn)
            return
        await serve_h1(
            stream,
            conn,
            app=app,
            limits=limits,
            fallback=hypercorn.serve,
            debug=debug,
            date=date,
        )

    return serve
