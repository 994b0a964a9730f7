"""Serve the management ASGI app with hypercorn's Trio worker on a socket we bind
ourselves (so port 0 works and the bound port is known before anyone connects)."""

from __future__ import annotations

import os
import socket

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

__all__ = ["serve_management_api"]


async def serve_management_api(
    app: ASGIFramework,
    host: str,
    port: int,
    *,
    bound_socket: socket.socket | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled, on ``host:port`` or on ``bound_socket`` (a listening
    socket bound by ``gateway serve``: served through a duplicate, never closed here)."""
    if bound_socket is not None:
        sock = bound_socket.dup()
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    cfg = HypercornConfig()
    # hypercorn adopts (and closes) the descriptor it is given: hand it a duplicate.
    cfg.bind = [f"fd://{os.dup(sock.fileno())}"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.keep_alive_timeout = 75
    cfg.h11_max_incomplete_size = 64 * 1024
    cfg.graceful_timeout = 2.0
    task_status.started(bound)
    try:
        await serve(app, cfg, mode="asgi")
    finally:
        sock.close()
