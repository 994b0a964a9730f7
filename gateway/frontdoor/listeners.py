"""The device listeners: accept loops, connection caps, graceful shutdown.

Task tree (everything owned by :func:`serve_device_listeners`)::

    serve_device_listeners
    ├─ connection host  (shielded; lives until the last connection is gone or cancelled)
    │   └─ one task per connection: FrontDoor.run_connection
    └─ accept nursery
        └─ one accept loop per listening socket

Cancelling the caller's scope stops the accept loops at once (no new connections), then
the front door drains: handlers' reads return EOF so sessions finish their in-flight
acknowledgements, and after ``shutdown_grace_s`` whatever is still running is cancelled.

Admission control: an accept loop takes a connection slot (``max_connections``) *before*
it accepts, so at the cap the kernel's backlog queues new clients instead of us taking
file descriptors we cannot serve; handshakes are limited separately in
:mod:`gateway.frontdoor.connection`.  ``accept()`` failing for lack of descriptors or memory
(EMFILE, ENFILE, ENOBUFS, ENOMEM) is logged and retried after a short sleep, as trio's
``serve_listeners`` does; other errors propagate.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
import trio

from gateway.frontdoor.bind import listen_hosts
from gateway.frontdoor.connection import DebugLog, FrontDoor, Handlers
from gateway.frontdoor.peer import ProxyPolicy
from gateway.metrics import Metrics
from gateway.model import Transport
from gateway.tls.contexts import ConnectorDirectory, ServerContexts

__all__ = [
    "ACCEPT_BACKOFF_S",
    "ACCEPT_CAPACITY_ERRNOS",
    "FrontDoorConfig",
    "serve_device_listeners",
    "serve_listener",
]

logger = logging.getLogger(__name__)

ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_BACKOFF_S = 0.1  # pause before accepting again after a capacity error


class FrontDoorConfig(msgspec.Struct, frozen=True):
    """Device listener settings.  A port of ``None`` turns that listener off; ``0`` binds an
    ephemeral port (tests), reported through ``task_status.started``.  ``host`` is one
    address or several, comma-separated (:func:`gateway.frontdoor.bind.listen_hosts`: IPv4,
    IPv6, ``::`` dual-stack).  ``proxy`` lists the listeners that read a PROXY protocol
    header first, with who may send it (:mod:`gateway.frontdoor.peer`)."""

    host: str = "0.0.0.0"
    tls_port: int | None = 8443  # multi-protocol TLS: ALPN / first-byte switch
    mqtt_tls_port: int | None = 8883  # MQTT over TLS only
    dev_http_port: int | None = None  # dev mode: plain HTTP, connector from Host
    dev_mqtt_port: int | None = None  # dev mode: plain MQTT, dev_default_connector
    server_cert_path: str = "var/tls/server.pem"  # wildcard chain (leaf first)
    server_key_path: str = "var/tls/server.key"
    handshake_timeout_s: float = 10.0
    max_connections: int = 19000  # live connections (each holds a descriptor)
    max_handshakes_in_flight: int = 512
    dev_default_connector: str | None = None
    shutdown_grace_s: float = 5.0
    backlog: int = 4096
    connection_prefix: str = ""  # prepended to connection ids (a node's worker: its own)
    proxy: dict[Transport, ProxyPolicy] = msgspec.field(default_factory=dict)

    def ports(self) -> dict[Transport, int]:
        """The configured listeners, by transport."""
        wanted = {
            Transport.TLS: self.tls_port,
            Transport.MQTT_TLS: self.mqtt_tls_port,
            Transport.DEV_HTTP: self.dev_http_port,
            Transport.DEV_MQTT: self.dev_mqtt_port,
        }
        return {transport: port for transport, port in wanted.items() if port is not None}


async def serve_listener(
    listener: trio.SocketListener,
    transport: Transport,
    door: FrontDoor,
    connections: trio.Nursery,
    slots: trio.CapacityLimiter,
) -> None:
    """Accept forever on ``listener``, starting ``door.run_connection`` in ``connections``."""
    while True:
        token = object()
        await slots.acquire_on_behalf_of(token)
        try:
            stream = await listener.accept()
        except OSError as exc:
            slots.release_on_behalf_of(token)
            if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                raise
            logger.error(
                "accept on %s returned %s (%s); retrying in %s s",
                transport.value,
                errno.errorcode.get(exc.errno or 0, "?"),
                os.strerror(exc.errno or 0),
                ACCEPT_BACKOFF_S,
            )
            await trio.sleep(ACCEPT_BACKOFF_S)
            continue
        except BaseException:
            slots.release_on_behalf_of(token)
            raise
        connections.start_soon(_connection_task, door, stream, transport, slots, token)


async def _connection_task(
    door: FrontDoor,
    stream: trio.SocketStream,
    transport: Transport,
    slots: trio.CapacityLimiter,
    token: object,
) -> None:
    try:
        await door.run_connection(stream, transport)
    finally:
        slots.release_on_behalf_of(token)


async def _host_connections(
    door: FrontDoor,
    grace_s: float,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[trio.Nursery],
) -> None:
    """Own the connection tasks, shielded from the caller's cancellation until ``stop``;
    then drain and give them ``grace_s`` before cancelling the rest."""
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await stop.wait()
            door.start_draining()
            nursery.cancel_scope.deadline = trio.current_time() + grace_s


async def serve_device_listeners(
    config: FrontDoorConfig,
    directory: ConnectorDirectory,
    handlers: Handlers,
    debug_log: DebugLog,
    *,
    contexts: ServerContexts | None = None,
    metrics: Metrics | None = None,
    sockets: Mapping[Transport, Sequence[socket.socket]] | None = None,
    task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the configured device listeners and serve until cancelled.

    ``task_status.started`` receives ``{transport value: bound port}``, e.g.
    ``{"tls": 8443, "mqtt_tls": 8883}``.  Pass ``contexts`` to keep a handle for
    ``contexts.reload_server_cert()``; otherwise one is built from the config's paths.
    ``sockets`` are listening sockets bound beforehand (by ``gateway serve``, which keeps
    them open across worker restarts, docs/architecture.md "The node"): each is served
    through a duplicate, so closing ours never closes the port; the config's ports are then
    not bound again.  Returns (after the shutdown grace period) only when cancelled.
    """
    if contexts is None:
        contexts = ServerContexts(
            directory,
            server_cert_path=Path(config.server_cert_path),
            server_key_path=Path(config.server_key_path),
        )
    door = FrontDoor(
        contexts=contexts,
        handlers=handlers,
        debug_log=debug_log,
        handshake_timeout_s=config.handshake_timeout_s,
        max_handshakes_in_flight=config.max_handshakes_in_flight,
        dev_default_connector=config.dev_default_connector,
        metrics=metrics,
        connection_prefix=config.connection_prefix,
        proxy=config.proxy,
    )
    slots = trio.CapacityLimiter(config.max_connections)
    opened: list[tuple[Transport, trio.SocketListener]] = []
    try:
        if sockets is not None:
            for transport, socks in sockets.items():
                for sock in socks:
                    dup = trio.socket.from_stdlib_socket(sock.dup())
                    opened.append((transport, trio.SocketListener(dup)))
        else:
            for transport, port in config.ports().items():
                for sock in listen_hosts(config.host, port, config.backlog, transport.value):
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    opened.append((transport, listener))
        bound: dict[str, int] = {}
        for transport, listener in opened:
            bound.setdefault(transport.value, listener.socket.getsockname()[1])
        stop = trio.Event()
        async with trio.open_nursery() as outer:
            connections: trio.Nursery = await outer.start(
                _host_connections, door, config.shutdown_grace_s, stop
            )
            try:
                async with trio.open_nursery() as accepting:
                    for transport, listener in opened:
                        accepting.start_soon(
                            serve_listener, listener, transport, door, connections, slots
                        )
                    logger.info("device listeners on %s: %s", config.host, bound)
                    task_status.started(bound)
            finally:
                stop.set()
                for _, listener in opened:
                    await trio.aclose_forcefully(listener)
    finally:
        for _, listener in opened:
            listener.socket.close()
