"""A worker: device connections over a remote store (docs/architecture.md "The node").

A worker is today's gateway minus the management API: the front door on the listening
sockets ``gateway serve`` bound (the kernel hands each new connection to whichever worker
accepts first; a worker whose connection slots are full stops accepting and the others take
the connections), the MQTT and HTTP device paths, and the services over a
:class:`~gateway.bus.client.RemoteStore`: reads straight from the store (SQLite's WAL, or a
PostgreSQL pool), writes to the store owner over the bus.  Committed events from the owner
drive pushes and kicks here, and drop the password proofs of devices locked, deleted or
revoked (:class:`_Inbox`).

Readiness: connected to the owner, registry loaded and listeners serving, it writes a line
to ``ready_fd``.  SIGTERM drains it: accepting stops, sessions finish their in-flight
acknowledgements (the front door's grace), and only then does the bus connection close.
SIGHUP (forwarded by the supervisor) and a ``TlsReload`` frame (``POST
/api/v1/tls/reload`` in the owner) re-read the node certificate for new handshakes.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from functools import partial

import trio

from gateway.app import cluster_prefix, prepare, reload_server_cert, serve_devices, server_contexts
from gateway.bus.api import MetricsSnapshot
from gateway.bus.client import NodeClient, RemoteStore
from gateway.bus.hub import hub_address
from gateway.config import GatewayConfig
from gateway.frontdoor.bind import BoundSockets
from gateway.metrics import Metrics
from gateway.services.bundle import Services
from gateway.services.connectors import Registry
from gateway.services.control import ControlHub
from gateway.services.devices import PasswordCache
from gateway.services.events import CommitSignals
from gateway.services.logs import LogHub
from gateway.store.api import CommittedEvent
from gateway.store.factory import read_side
from gateway.tls.contexts import ServerContexts

__all__ = ["worker_main"]

log = logging.getLogger(__name__)


class _Inbox:
    """What the bus delivers into a worker (:class:`gateway.bus.api.Inbox`)."""

    def __init__(self, services: Services, signals: CommitSignals, tls: ServerContexts) -> None:
        self.services = services
        self.signals = signals
        self.tls = tls

    def events(self, events: Sequence[CommittedEvent]) -> None:
        self.signals.on_commit(events)
        self.services.control.on_events(events)
        self.services.devices.passwords.on_events(events)

    async def registry_changed(self, connector_id: str | None) -> None:
        await self.services.connectors.reload(connector_id)

    async def reload_tls(self) -> None:
        await reload_server_cert(self.tls)

    def snapshot(self) -> MetricsSnapshot:
        return self.services.snapshot()


def worker_main(config: GatewayConfig, index: int, sockets: BoundSockets, ready_fd: int) -> None:
    """Worker ``index``'s process body (after fork)."""
    sockets.api.close()  # the store owner serves the management API
    trio.run(partial(_worker, config, index, sockets, ready_fd))


async def _worker(config: GatewayConfig, index: int, sockets: BoundSockets, ready_fd: int) -> None:
    pki, _token = await prepare(config)
    # this incarnation's connection ids: the owner takes its devices offline if it dies
    prefix = f"{cluster_prefix(config)}w{index}.{os.getpid():x}-"
    client = NodeClient(hub_address(config.data), index, prefix)
    registry = Registry(config.base_domain)
    logs = LogHub(bus=client)
    signals = CommitSignals()
    reads = read_side(config.store, config.data_dir)
    store = RemoteStore(reads, client, on_failure=logs.store_failed)
    metrics = Metrics()
    services = Services(
        config,
        store,
        registry=registry,
        logs=logs,
        control=ControlHub(registry),
        signals=signals,
        passwords=PasswordCache(config.password_cache_entries, metrics),
        metrics=metrics,
        bus=client,
        process=f"worker-{index}",
    )
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as sigs:
            tls = await server_contexts(services, pki)
            async with trio.open_nursery() as outer:
                await outer.start(client.run, _Inbox(services, signals, tls))
                await services.connectors.load()
                async with trio.open_nursery() as inner:
                    await inner.start(
                        partial(serve_devices, sockets=sockets, connection_prefix=prefix),
                        services,
                        config,
                        pki,
                        tls,
                    )
                    os.write(ready_fd, b"ready\n")
                    os.close(ready_fd)
                    log.info("worker %d ready (pid %d)", index, os.getpid())
                    async for signum in sigs:
                        if signum == signal.SIGHUP:  # forwarded by the supervisor
                            await reload_server_cert(tls)
                            continue
                        break
                    log.info("worker %d draining", index)
                    inner.cancel_scope.cancel()
                # every connection has finished (or its grace ran out): nothing is in flight
                outer.cancel_scope.cancel()
    finally:
        store.close()
