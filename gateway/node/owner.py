"""The store owner: the one process of a node that writes (docs/architecture.md "The node").

It opens the SQLite store (the writer thread and its group commit, event sequence
numbers), serves the management API on the socket ``gateway serve`` bound, runs the
integration jobs, and runs the bus hub (``gateway/bus/hub.py``) that the workers connect
to.  It sees every commit first-hand, so the live log's ``events`` records, the event-log
long-polls and ``/metrics`` (summed over the workers) are served here.

Readiness: once the hub listens and the API serves, it writes one line to ``ready_fd`` (the
demo connector's id, or nothing) and closes it; the supervisor starts the workers then.  A
start cut short by a full disk (the database cannot be opened even with its space reserve)
writes ``error: cannot start: ...`` there instead and exits 1 without a traceback: the
supervisor ends a first start with that line, and restarts an owner that had served before
(docs/decisions.md "Disk full").  On a full disk the owner's start writes are skipped with
a warning (``gateway/app.py`` ``start_store_side``).
SIGTERM stops it: the hub and the API close, then the store closes after every queued
submission has committed.  SIGHUP (forwarded by the supervisor) re-reads the node
certificate, as every worker does.  SIGINT is ignored (a terminal's ^C reaches every process of the
group; the supervisor decides the order of the shutdown).
"""

from __future__ import annotations

import logging
import os
import signal
from functools import partial

import trio

from gateway.app import (
    cannot_start,
    open_services_on,
    prepare,
    reload_server_cert,
    run_cluster,
    serve_management,
    server_contexts,
    start_store_side,
    with_cluster,
)
from gateway.bus.hub import NodeHub, hub_address
from gateway.bus.link import listen_unix
from gateway.config import GatewayConfig
from gateway.frontdoor.bind import BoundSockets
from gateway.services.integrations import serve_integrations

__all__ = ["owner_main"]

log = logging.getLogger(__name__)


class _ReadyPipe:
    """The readiness pipe to the supervisor: one line, then closed (never written after
    that: its descriptor number may belong to another file by then)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def send(self, line: str) -> bool:
        """Write ``line`` and close; False when it was sent already."""
        fd, self.fd = self.fd, None
        if fd is None:
            return False
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
        return True


def owner_main(config: GatewayConfig, sockets: BoundSockets, ready_fd: int, *, reset: bool) -> None:
    """The store owner's process body (after fork).  ``reset``: clear stale ``online``
    flags (the node's first start; not when only the owner restarts)."""
    for socks in sockets.device.values():
        for s in socks:
            s.close()  # workers serve devices; the supervisor keeps the ports open
    ready = _ReadyPipe(ready_fd)
    try:
        trio.run(partial(_owner, config, sockets, ready, reset=reset))
    except BaseException as exc:
        line = cannot_start(exc, config.data_dir)
        if line is None or not ready.send(line):  # not a start cut short by a full disk
            raise
        raise SystemExit(1) from None


async def _owner(
    config: GatewayConfig, sockets: BoundSockets, ready: _ReadyPipe, *, reset: bool
) -> None:
    pki, token = await prepare(config)
    hub = NodeHub()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        bus = with_cluster(config, hub)  # the hub, or the hub inside the cluster's bus
        async with open_services_on(config, bus, process="store") as services:
            demo = await start_store_side(services, config, reset=reset)
            # the certificates the management API lists and reloads (the workers serve)
            tls = await server_contexts(services, pki)
            listener = await listen_unix(hub_address(config.data))
            async with trio.open_nursery() as nursery:
                await nursery.start(run_cluster, services, hub, config)
                # workers' debug records: to the subscribers here, and on to the cluster's
                # while another node wants them (LogHub.publish)
                await nursery.start(hub.serve, listener, services.store, services.logs.publish)
                await nursery.start(
                    partial(serve_management, sockets=sockets), services, config, token, tls
                )
                await nursery.start(serve_integrations, services.integrations)
                ready.send(demo or "")
                log.info("store owner ready (pid %d)", os.getpid())
                async for signum in signals:
                    if signum == signal.SIGHUP:  # forwarded by the supervisor
                        await reload_server_cert(tls)
                        continue
                    break
                log.info("store owner stopping")
                nursery.cancel_scope.cancel()
