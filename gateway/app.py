"""The composition root: data directory, PKI, store, services, listeners — in one place.

Everything else receives its collaborators as parameters.  The nursery tree is::

    serve()
    └─ open_services()         the hubs, the store (writer thread, joined after the
       │                       listeners have stopped) and the services over it
       └─ nursery
          ├─ management API    hypercorn (trio worker) on 127.0.0.1:9080
          ├─ device listeners  front door: TLS, MQTT-only TLS, dev plain HTTP / MQTT
          └─ integrations      health probes and asset jobs on their schedules

Construction order (no object gets a collaborator attached later): the bus, the connector
registry, the live-log hub, the long-poll signals, the control hub and the metrics first;
then the store, whose ``on_events`` feeds the hubs and the bus and whose ``on_failure``
reports to the live log; then :class:`~gateway.services.bundle.Services` with all of them.
A multi-process node (``gateway/node/``) builds its processes from the same pieces.

Shutdown (SIGINT/SIGTERM or cancellation) stops accepting first, lets in-flight
acknowledgements finish inside the front door's grace period, and only then closes the
store, so nothing acknowledged is lost on a clean stop either.  SIGHUP re-reads the node's
server certificate (``DIR/tls/server.pem`` and ``server.key``) for new handshakes, as
``POST /api/v1/tls/reload`` does.

Before anything is opened the data directory is made private (:mod:`gateway.datadir`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio

from gateway.bus.api import Bus, LocalBus
from gateway.bus.cluster import ClusterBus
from gateway.clock import now_us
from gateway.config import OFF, GatewayConfig, fd_capacity, proxy_listeners, split_list
from gateway.datadir import secure_data_dir, write_file_atomic
from gateway.errors import StorageFull, is_disk_full
from gateway.frontdoor.bind import BoundSockets
from gateway.metrics import Metrics
from gateway.model import LogRecord, Transport
from gateway.services.bundle import Services, committed_fanout
from gateway.services.connectors import ConnectorSettings, ProtocolSettings, Registry, Resource
from gateway.services.control import ControlHub
from gateway.services.devices import PasswordCache
from gateway.services.events import CommitSignals
from gateway.services.integrations import serve_integrations
from gateway.services.liveness import run_node_beat
from gateway.services.logs import LogHub
from gateway.store.api import CommittedEvent, DropConnections, ResetOnline
from gateway.store.factory import open_store
from gateway.tls.contexts import ServerContexts
from gateway.tls.pki import DevPKI, ensure_dev_pki

if TYPE_CHECKING:
    from gateway.frontdoor.listeners import FrontDoorConfig

__all__ = [
    "DEMO_RESOURCES",
    "ClusterFanout",
    "ProcessInfo",
    "RunInfo",
    "Running",
    "ensure_admin_token",
    "open_services",
    "run_gateway",
    "serve",
    "with_cluster",
]

log = logging.getLogger(__name__)

DEMO_CONNECTOR_ID = "demo"
# The ExoSense standard resources (docs/protocol.md §4.5).
DEMO_RESOURCES = [
    Resource(alias="data_in", format="string"),
    Resource(alias="data_out", format="string", settable=True, sync=True),
    Resource(alias="config_io", format="string", settable=True, sync=True),
]


class ProcessInfo(msgspec.Struct):
    """One process of a multi-process node, as ``run.json`` lists it."""

    role: str  # "store" or "worker"
    index: int  # workers 1..N; 0 for the store owner
    pid: int
    started: float  # unix time of the last (re)start
    restarts: int = 0
    crash_loop: bool = False  # restarted soon after its start, now backing off
    next_start_s: float = 0.0  # the back-off before the next start


class RunInfo(msgspec.Struct):
    """What ``DIR/run.json`` says about a running gateway (tests and benchmarks read it).
    ``pid`` is the ``gateway serve`` process (the supervisor of a multi-process node)."""

    pid: int
    ports: dict[str, int]
    demo_connector: str | None
    base_domain: str
    data: str
    admin_token_file: str
    ca: str
    implementation: str
    api_host: str = "127.0.0.1"  # where the management API listens (the CLI connects here)
    workers: int = 1  # device-serving processes (1: everything in the process ``pid``)
    processes: list[ProcessInfo] = msgspec.field(default_factory=list)


def ensure_admin_token(data_dir: Path) -> tuple[str, bool]:
    """The admin bearer token (``DIR/admin.token``, mode 0600); created on first start,
    whole or not at all (a full disk raises ``OSError`` and leaves no empty token)."""
    path = data_dir / "admin.token"
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    try:
        write_file_atomic(path, (token + "\n").encode(), exclusive=True)
    except FileExistsError:  # another start won the race: its token it is
        return path.read_text().strip(), False
    return token, True


async def _ensure_demo(services: Services, config: GatewayConfig) -> str | None:
    if not config.demo_connector:
        return None
    c = services.registry.get(DEMO_CONNECTOR_ID)
    if c is None:
        settings = ConnectorSettings(
            protocol=ProtocolSettings(name="onep:v1/http", devmode=config.dev)
        )
        await services.connectors.create(
            name="Demo connector",
            connector_id=DEMO_CONNECTOR_ID,
            description="ExoSense standard resources; created on first start",
            settings=settings,
            resources=list(DEMO_RESOURCES),
        )
    elif config.dev and not c.settings.protocol.devmode:
        settings = msgspec.structs.replace(
            c.settings, protocol=msgspec.structs.replace(c.settings.protocol, devmode=True)
        )
        await services.connectors.update(DEMO_CONNECTOR_ID, settings=settings)
    return DEMO_CONNECTOR_ID


def _absolute(path: str | Path) -> str:
    """Absolute path for run.json (readers may run in another working directory)."""
    return os.path.abspath(path)


def _port(value: int, enabled: bool = True) -> int | None:
    return None if (value == OFF or not enabled) else value


@asynccontextmanager
async def open_services(config: GatewayConfig) -> AsyncIterator[Services]:
    """The store (``DIR/gateway.db``, or the ``store`` URL's database) and every service
    over it, wired together, for the duration of the block; connectors loaded.  Closing
    waits until every submission made inside has been committed and acknowledged.  (Tests
    build their services with this too, so they run the same wiring as the gateway.)"""
    async with open_services_on(config, LocalBus()) as services:
        yield services


@asynccontextmanager
async def open_services_on(
    config: GatewayConfig, bus: Bus, *, process: str = "gateway"
) -> AsyncIterator[Services]:
    """:func:`open_services` for the process that owns the store, telling ``bus`` about
    every commit (the store owner of a multi-process node passes its hub)."""
    registry = Registry(config.base_domain)
    logs = LogHub(bus=bus)
    signals = CommitSignals()
    control = ControlHub(registry)
    metrics = Metrics()
    passwords = PasswordCache(config.password_cache_entries, metrics)
    fanout = committed_fanout(signals, logs, control, passwords)

    def on_events(events: Sequence[CommittedEvent]) -> None:
        fanout(events)
        bus.publish_events(events)

    async with open_store(
        config.store,
        data_dir=config.data_dir,
        synchronous=config.synchronous,
        on_events=on_events,
        on_failure=logs.store_failed,
        event_retention_count=config.event_retention_count,
        event_retention_age_s=config.event_retention_days * 86400.0,
    ) as store:
        services = Services(
            config,
            store,
            registry=registry,
            logs=logs,
            control=control,
            signals=signals,
            passwords=passwords,
            metrics=metrics,
            bus=bus,
            process=process,
        )
        await services.connectors.load()
        await services.connectors.seal_stored_keys()  # keys an older release kept in clear
        yield services


class Running(msgspec.Struct):
    """A started gateway, as ``run_gateway`` reports it (tests reach the services; ``tls``
    serves every device handshake, :func:`serve` reloads its certificate on SIGHUP)."""

    info: RunInfo
    services: Services
    tls: ServerContexts


async def reload_server_cert(tls: ServerContexts) -> None:
    """SIGHUP: re-read the node certificate; a failure keeps the old one and is logged."""
    try:
        info = await trio.to_thread.run_sync(tls.reload_server_cert)
    except (OSError, ValueError) as exc:
        log.error("SIGHUP: server certificate not reloaded, the old one stays: %s", exc)
        return
    log.info("SIGHUP: serving %s (sha256 %s) on new handshakes", info.subject, info.fingerprint)


async def serve(
    config: GatewayConfig,
    *,
    sockets: BoundSockets | None = None,
    task_status: trio.TaskStatus[RunInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway in this process until SIGINT/SIGTERM (or cancellation)."""
    # The receiver stays open until shutdown has finished: a second SIGTERM (systemd and the
    # single binary's launcher can both deliver one) must not kill a closing store.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(partial(run_gateway, sockets=sockets), config)
            task_status.started(running.info)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await reload_server_cert(running.tls)
                    continue
                log.info("signal %s: shutting down", signum)
                break
            nursery.cancel_scope.cancel()


def front_door_config(
    config: GatewayConfig, pki: DevPKI, connection_prefix: str = ""
) -> FrontDoorConfig:
    """The front door's settings for one device-serving process: its connection slots are
    what its open-file limit allows, up to the node's ``max_connections``; its connection
    ids start with ``connection_prefix`` (a worker's own, so that its devices can be taken
    offline if it dies)."""
    from gateway.frontdoor.listeners import FrontDoorConfig
    from gateway.frontdoor.peer import ProxyPolicy

    policy = ProxyPolicy(tuple(split_list(config.proxy_trusted)), required=config.proxy_required)
    return FrontDoorConfig(
        host=config.host,
        tls_port=_port(config.tls_port),
        mqtt_tls_port=_port(config.mqtt_tls_port),
        dev_http_port=_port(config.dev_http_port, config.dev),
        dev_mqtt_port=_port(config.dev_mqtt_port, config.dev),
        server_cert_path=str(pki.server_cert),
        server_key_path=str(pki.server_key),
        handshake_timeout_s=config.handshake_timeout_s,
        max_connections=min(config.max_connections, fd_capacity()),
        max_handshakes_in_flight=config.max_handshakes,
        max_handshakes_per_ip=config.max_handshakes_per_ip,
        dev_default_connector=config.dev_connector if config.dev else None,
        connection_prefix=connection_prefix,
        proxy={Transport(name): policy for name in proxy_listeners(config)},
    )


async def server_contexts(services: Services, pki: DevPKI) -> ServerContexts:
    """The TLS contexts a device-serving process hands its handshakes (the node certificate
    from ``DIR/tls``, connectors' own from the registry); reloaded on SIGHUP."""
    return await trio.to_thread.run_sync(
        partial(
            ServerContexts,
            services.directory,
            server_cert_path=pki.server_cert,
            server_key_path=pki.server_key,
        )
    )


async def serve_devices(
    services: Services,
    config: GatewayConfig,
    pki: DevPKI,
    tls: ServerContexts,
    *,
    sockets: BoundSockets | None = None,
    connection_prefix: str = "",
    task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The device listeners (front door, MQTT and HTTP) over ``services`` until cancelled;
    on ``sockets`` when ``gateway serve`` bound them (else on the config's ports)."""
    from gateway.device.http.server import H1Limits, make_http_server
    from gateway.device.mqtt.connection import make_mqtt_server
    from gateway.frontdoor.connection import Handlers
    from gateway.frontdoor.listeners import serve_device_listeners

    http_limits = H1Limits(
        head_timeout_s=config.http_head_timeout_s,
        body_timeout_s=config.http_body_timeout_s,
        keep_alive_s=config.http_keep_alive_s,
    )
    serve_http = make_http_server(services, fast_path=config.http_fast_path, limits=http_limits)
    handlers = Handlers(serve_mqtt=make_mqtt_server(services), serve_http=serve_http)
    await serve_device_listeners(
        front_door_config(config, pki, connection_prefix),
        services.directory,
        handlers,
        services.debug,
        contexts=tls,
        metrics=services.metrics,
        sockets=sockets.device if sockets is not None else None,
        admission=services.limits,
        task_status=task_status,
    )


async def serve_management(
    services: Services,
    config: GatewayConfig,
    token: str,
    tls: ServerContexts,
    *,
    sockets: BoundSockets | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The management API (and console, ``/metrics``) over ``services`` until cancelled."""
    from gateway.mgmt.app import create_app
    from gateway.mgmt.server import serve_management_api

    await serve_management_api(
        create_app(services, admin_token=token, tls=tls),  # type: ignore[arg-type]  # Starlette's ASGI types are looser than hypercorn's
        config.api_host,
        config.api_port,
        bound_socket=sockets.api if sockets is not None else None,
        task_status=task_status,
    )


RUN_JSON_RETRY_S = 5.0  # how often a run.json the full disk refused is tried again


def write_run_json(data: Path, info: RunInfo) -> bool:
    """``DIR/run.json`` replaced whole (readers never see half a file).  False when the
    disk is full; then no ``run.json`` is left: the one of an earlier run names a process
    that is gone and ports that are not ours, and the CLI and the probes would talk to
    nobody.  Its writer tries again every ``RUN_JSON_RETRY_S`` (docs/decisions.md "Disk
    full"): :func:`publish_run_json` in one process, the supervisor in a node.

    Not fsynced: it describes the running processes only.  Small enough to write on the
    Trio thread, and writing it there means no write can land after shutdown removed it."""
    path = data / "run.json"
    text = json.dumps(msgspec.to_builtins(info), indent=2).encode()
    try:
        write_file_atomic(path, text, mode=0o644, sync=False)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        path.unlink(missing_ok=True)
        return False
    return True


def run_json_refused(data: Path, info: RunInfo) -> None:
    """The warning of a ``run.json`` the full disk refused, naming the ports instead."""
    log.warning(
        "%s not written: the disk is full; written once space is back.  Serving on ports %s",
        data / "run.json",
        info.ports,
    )


async def publish_run_json(
    data: Path, info: RunInfo, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Write ``run.json``; on a full disk log a warning with the ports and try again every
    ``RUN_JSON_RETRY_S`` until it is written.  Started after the first attempt."""
    if write_run_json(data, info):
        task_status.started()
        return
    run_json_refused(data, info)
    task_status.started()
    while True:
        await trio.sleep(RUN_JSON_RETRY_S)
        if write_run_json(data, info):
            log.info("%s written: space is back", data / "run.json")
            return


def cannot_start(exc: BaseException, data_dir: Path) -> str | None:
    """The one line (no traceback: the remedy is to free space, not to debug) for a start
    cut short by a full disk: the store's :class:`~gateway.errors.StorageFull` (the
    database cannot be opened) or the ``OSError`` of a file the start writes (the PKI, the
    admin token, the secrets key), found in ``exc`` or the groups it holds.  None when
    ``exc`` is something else (it keeps its traceback)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            line = cannot_start(inner, data_dir)
            if line is not None:
                return line
        return None
    if isinstance(exc, StorageFull):
        return f"error: cannot start: {exc.message}"
    if isinstance(exc, OSError) and is_disk_full(exc):
        return (
            f"error: cannot start: the disk holding {data_dir} is full ({exc.strerror}); "
            "free some space there and start again"
        )
    return None


def run_info(
    config: GatewayConfig,
    pki: DevPKI,
    ports: dict[str, int],
    demo: str | None,
    *,
    workers: int = 1,
    processes: list[ProcessInfo] | None = None,
) -> RunInfo:
    from gateway._impl import implementation

    data = config.data_dir
    return RunInfo(
        pid=os.getpid(),
        ports=ports,
        demo_connector=demo,
        base_domain=config.base_domain,
        data=_absolute(data),
        admin_token_file=_absolute(data / "admin.token"),
        ca=_absolute(pki.ca_cert),
        implementation=implementation(),
        api_host=config.api_host,
        workers=workers,
        processes=processes or [],
    )


async def prepare(config: GatewayConfig) -> tuple[DevPKI, str]:
    """The data directory, the development PKI and the admin token (created if needed)."""
    data = config.data_dir
    await trio.to_thread.run_sync(secure_data_dir, data)
    pki: DevPKI = await trio.to_thread.run_sync(ensure_dev_pki, data / "tls", config.base_domain)
    token, _created = ensure_admin_token(data)
    return pki, token


async def start_store_side(services: Services, config: GatewayConfig, *, reset: bool) -> str | None:
    """What the process owning the store does before serving: clear stale ``online``
    flags (``reset``: nobody is connected yet; not when only the store owner restarted
    while workers hold connections) and create the demo connector.  Returns its id.  In a
    cluster only this node's stale sessions go offline (its connection-id prefix): the other
    nodes' devices stay online.

    On a full disk both are skipped with a warning and the process starts anyway, serving
    reads and refusing writes until space is back (docs/decisions.md "Disk full")."""
    if reset:
        reset_op: ResetOnline | DropConnections = ResetOnline()
        if config.clustered:
            reset_op = DropConnections(cluster_prefix(config), now_us(), reason="node_restarted")
        try:
            await services.store.write([reset_op])
        except StorageFull as exc:
            log.warning(
                "start: online flags not cleared (%s): devices online at the last stop stay "
                "marked online until they connect again",
                exc.message,
            )
    try:
        return await _ensure_demo(services, config)
    except StorageFull as exc:
        log.warning("start: demo connector not created or updated: %s", exc.message)
        return DEMO_CONNECTOR_ID if services.registry.get(DEMO_CONNECTOR_ID) else None


def cluster_prefix(config: GatewayConfig) -> str:
    """Where this process's connection ids start in a cluster (``""`` outside one): the
    node's name, so that a restarted node takes its own stale sessions offline alone."""
    return f"{config.node}." if config.clustered else ""


def with_cluster(config: GatewayConfig, local: Bus) -> Bus:
    """The bus of the process that owns the store: ``local`` (the node's own), wrapped in a
    :class:`~gateway.bus.cluster.ClusterBus` when the node is part of a cluster."""
    if not config.clustered:
        return local
    return ClusterBus(config.bus, config.node, local)


class ClusterFanout:
    """What the other nodes' messages do in the process that owns the store
    (:class:`gateway.bus.cluster.ClusterInbox`): their committed events are fanned out as
    this node's own (long-poll wake-ups, live logs, pushes and kicks here) and sent on to
    the node's workers through ``local``; registry changes are re-read here and told to the
    workers; debug records reach this node's live-log subscribers."""

    def __init__(self, services: Services, local: Bus) -> None:
        self.services = services
        self.local = local
        self._fanout = committed_fanout(
            services.events.signals,
            services.logs,
            services.control,
            services.devices.passwords,
        )

    def events(self, events: Sequence[CommittedEvent]) -> None:
        self._fanout(events)
        self.local.publish_events(events)

    async def registry_changed(self, connector_id: str | None) -> None:
        before = {c.id for c in self.services.registry.all()}
        await self.services.connectors.reload(connector_id)
        if connector_id is not None:
            self.local.publish_registry(connector_id)
            return
        for cid in sorted(before | {c.id for c in self.services.registry.all()}):
            self.local.publish_registry(cid)

    def log(self, record: LogRecord) -> None:
        self.services.logs.deliver(record)


async def run_cluster(
    services: Services,
    local: Bus,
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The cluster side of the process that owns the store, until cancelled: the bus to the
    other nodes (``services.bus``, a :class:`~gateway.bus.cluster.ClusterBus`) and this
    node's beat (:mod:`gateway.services.liveness`).  Outside a cluster: nothing."""
    bus = services.bus
    if not config.clustered or not isinstance(bus, ClusterBus):
        task_status.started()
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run, ClusterFanout(services, local))
        await nursery.start(
            run_node_beat,
            services.store,
            config.node,
            cluster_prefix(config),
            config.node_lost_after_s,
        )
        task_status.started()


async def run_gateway(
    config: GatewayConfig,
    *,
    sockets: BoundSockets | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole gateway in this process (``--workers 1``, the in-process tests) until
    cancelled; on ``sockets`` when ``gateway serve`` bound them."""
    pki, token = await prepare(config)
    data = config.data_dir
    local = LocalBus()
    async with open_services_on(config, with_cluster(config, local)) as services:
        demo = await start_store_side(services, config, reset=True)
        tls = await server_contexts(services, pki)
        async with trio.open_nursery() as nursery:
            await nursery.start(run_cluster, services, local, config)
            api_port = await nursery.start(
                partial(serve_management, sockets=sockets), services, config, token, tls
            )
            ports: dict[str, int] = await nursery.start(
                partial(serve_devices, sockets=sockets, connection_prefix=cluster_prefix(config)),
                services,
                config,
                pki,
                tls,
            )
            await nursery.start(serve_integrations, services.integrations)
            info = run_info(config, pki, {"api": api_port, **ports}, demo)
            await nursery.start(publish_run_json, data, info)
            task_status.started(Running(info, services, tls))
            try:
                await trio.sleep_forever()
            finally:
                (data / "run.json").unlink(missing_ok=True)
