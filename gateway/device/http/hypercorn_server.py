"""Hand a device connection to hypercorn's per-connection HTTP server (h2, or h11 for
what the HTTP/1.1 fast path hands over: upgrades, the HTTP/2 prior-knowledge preface, and
everything when the fast path is switched off).

This is the ONLY module that imports hypercorn internals (pinned at 0.18.0 in
pyproject.toml).  hypercorn's Trio worker (``hypercorn/trio/run.py``) accepts sockets
itself and wraps each in ``hypercorn.trio.tcp_server.TCPServer``, whose ``run()`` performs
the stdlib TLS handshake and reads ALPN and addresses from the ``trio.SSLStream``.  Our front
door has already done all of that (pyOpenSSL over memory BIOs, SNI → connector, client
certificate → claim, ALPN), so :class:`_DeviceHTTPServer` subclasses ``TCPServer`` and
replaces only ``run()``: it builds the same ``ProtocolWrapper`` from the
:class:`~gateway.model.ConnectionInfo` instead of from the socket, and reuses hypercorn's
send/read/idle/close machinery unchanged.

What the ASGI app receives: ``scope["state"][STATE_KEY]`` is the connection's
:class:`~gateway.device.http.asgi.HttpConnection` (hypercorn copies the connection state
dict into every request scope).  When the read side ends, ``HttpConnection.close()``
cancels the connection's waiting long-polls.

Limits: request heads above ``MAX_HEAD_BYTES`` get ``431`` from h11 (hypercorn answers
with h11's status hint and closes); idle keep-alive connections close after
``keep_alive_s``.  hypercorn's own cap of 1,000 requests per connection is lifted: devices
keep one connection for days, and at the cap hypercorn ends HTTP/1.1 connections with
``Connection: close`` and HTTP/2 ones with a GOAWAY that fails the request in flight.

If hypercorn is upgraded, re-read ``hypercorn/trio/tcp_server.py`` and check that
``TCPServer.__init__``, ``protocol_send``, ``_read_data``, ``_close`` and ``_idle_timeout``
still have these shapes; ``tests/conformance/http`` exercises every path used here.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState

from gateway.device.http.app import DeviceApp
from gateway.device.http.asgi import STATE_KEY, HttpConnection

__all__ = ["KEEP_ALIVE_S", "MAX_HEAD_BYTES", "HypercornHTTP", "hypercorn_config"]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line + headers; h11 answers 431 above this
KEEP_ALIVE_S = 120.0  # an idle keep-alive connection is closed after this long
MAX_REQUESTS = 2**62  # per connection: no cap (hypercorn's default of 1,000 recycles it)


def hypercorn_config(*, keep_alive_s: float = KEEP_ALIVE_S) -> Config:
    """The hypercorn settings of the device port (no access log: the event log is ours)."""
    cfg = Config()
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("gateway.device.http.hypercorn_server.hypercorn")
    cfg.include_server_header = False  # the app sends "server: gateway"
    cfg.include_date_header = True
    cfg.keep_alive_timeout = keep_alive_s
    cfg.keep_alive_max_requests = MAX_REQUESTS
    cfg.h11_max_incomplete_size = MAX_HEAD_BYTES
    cfg.read_timeout = None
    return cfg


class _DeviceHTTPServer(TCPServer):
    """hypercorn's per-connection server on an already-established stream."""

    def __init__(
        self,
        app: ASGIWrapper,
        config: Config,
        context: WorkerContext,
        stream: trio.abc.Stream,
        conn: HttpConnection,
    ) -> None:
        # TCPServer annotates an SSLStream, but after run() (replaced below) it only calls
        # receive_some, send_all and aclose, which every trio Stream has (send_eof is
        # looked up under "except AttributeError" there).
        super().__init__(app, config, context, {}, cast("trio.SSLStream[Any]", stream))
        self.conn = conn
        self.conn_state = ConnectionState({STATE_KEY: conn})

    async def run(self) -> None:
        info = self.conn.info
        alpn = "h2" if info.alpn == "h2" else "http/1.1"
        client = (info.peer_ip, info.peer_port) if info.peer_ip else None
        try:
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    self.conn_state,
                    info.tls,
                    client,
                    self.conn.server,
                    self.protocol_send,
                    alpn,
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
                # hypercorn leaves the keep-alive timer running after the peer closed, which
                # would hold this task (and its connection slot) for KEEP_ALIVE_S.
                await self.idle_task.stop()
        except OSError as exc:
            log.debug("connection %s: %r", info.connection_id, exc)
        finally:
            self.conn.close()
            await self._close()

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            # the peer is gone (or draining began): waiting long-polls end now
            self.conn.close()


class HypercornHTTP:
    """hypercorn serving the device app, one connection per :meth:`serve` call."""

    def __init__(self, app: DeviceApp, *, keep_alive_s: float = KEEP_ALIVE_S) -> None:
        self._app = ASGIWrapper(cast("ASGIFramework", app))
        self._config = hypercorn_config(keep_alive_s=keep_alive_s)
        self._context = WorkerContext(None)

    async def serve(self, stream: trio.abc.Stream, conn: HttpConnection) -> None:
        """Run one connection (HTTP/2 when ``conn.info.alpn`` says ``h2``, else h11, which
        also takes the prior-knowledge preface and ``Upgrade: h2c``) to its end.  The
        stream is closed here and by the caller (the front door); twice is harmless."""
        await _DeviceHTTPServer(self._app, self._config, self._context, stream, conn).run()
