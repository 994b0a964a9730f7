"""A worker's end of the node bus, and the remote store over it.

Theory of operation
-------------------
:class:`NodeClient` keeps one connection to the store owner's hub (``hub.py``), reconnecting
with back-off when it breaks (the owner was killed and is being restarted).  It is the
worker's :class:`~gateway.bus.api.Bus` and carries the worker's writes:

* :class:`RemoteStore` reads through the store's read side (SQLite directly, WAL: a worker
  sees every commit the moment it is made; or a PostgreSQL pool) and sends each submission as one
  ``Submit`` frame.  Many submissions are in flight at once (pipelined), so the owner's
  group commit spans every worker.  A ticket resolves when the owner's ``Committed`` frame
  arrives, which the owner sends only after COMMIT: an acknowledgement still means durable
  (docs/architecture.md principle 2).
* While the connection is down, every pending ticket fails with ``StoreFailed`` (the device
  layers then acknowledge nothing and close the device's connection so that it resends)
  and new submissions fail at once; nothing waits for the owner to come back.
* Frames from the owner go to the worker's :class:`~gateway.bus.api.Inbox`: committed
  events (pushes, kicks), registry changes (after a reconnect the whole registry is re-read:
  changes may have been missed), live-log interest, metrics requests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import msgspec
import trio

from gateway.bus.api import Inbox, MetricsSnapshot
from gateway.bus.frames import (
    Committed,
    Events,
    Failed,
    Hello,
    Interest,
    Log,
    Registry,
    Snapshot,
    SnapshotRequest,
    Submit,
    TlsReload,
)
from gateway.bus.link import Link, connect_unix
from gateway.errors import GatewayError, StoreFailed, rebuild_error
from gateway.model import LogRecord
from gateway.store.api import (
    AdminToken,
    AssetRow,
    CommittedEvent,
    ConnectorRow,
    ContentRow,
    DeviceCounts,
    DeviceQuery,
    DeviceRow,
    EventQuery,
    HealthRow,
    IntegrationRecord,
    Op,
    OpResult,
    Page,
    RunRow,
    StateRow,
    StoreStats,
    TokenMatch,
)
from gateway.store.factory import ReadSide

__all__ = ["RECONNECT_MAX_S", "NodeClient", "RemoteStore"]

log = logging.getLogger(__name__)

RECONNECT_FIRST_S = 0.05
RECONNECT_MAX_S = 1.0
OnFailure = Callable[[Sequence[Op], GatewayError], None]


class _RemoteTicket:
    __slots__ = ("_error", "_event", "_result", "detached", "on_failure", "ops")

    def __init__(self, ops: Sequence[Op], detached: bool, on_failure: OnFailure | None) -> None:
        self._event = trio.Event()
        self._result: list[OpResult] = []
        self._error: GatewayError | None = None
        self.ops = ops
        self.detached = detached
        self.on_failure = on_failure

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> list[OpResult]:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def resolve(self, results: list[OpResult]) -> None:
        self._result = results
        self._event.set()

    def fail(self, error: GatewayError) -> None:
        self._error = error
        self._event.set()
        if self.detached and self.on_failure is not None:
            try:
                self.on_failure(self.ops, error)
            except Exception:
                log.exception("store failure report failed")


class NodeClient:
    """The worker's :class:`~gateway.bus.api.Bus` and its link to the store owner."""

    def __init__(self, address: str, worker: int, connection_prefix: str = "") -> None:
        self.address = address
        self.worker = worker
        self.connection_prefix = connection_prefix
        self._link: Link | None = None
        self._pending: dict[int, _RemoteTicket] = {}
        self._next_id = 0
        self._logs_wanted = False
        self._changed = trio.Event()  # set (and replaced) at every connect and loss
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

    async def wait_connected(self, connected: bool = True) -> None:
        """Return once the link to the store owner is up (or, with False, down)."""
        while self.connected != connected:
            await self._changed.wait()

    def _transition(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- Bus ---------------------------------------------------------------------------

    def publish_events(self, events: Sequence[CommittedEvent]) -> None:
        return None  # workers commit nothing themselves: the owner publishes

    def publish_registry(self, connector_id: str) -> None:
        return None  # connectors change only through the management API (the owner)

    def publish_log(self, record: LogRecord) -> None:
        link = self._link
        if link is not None:
            link.send(Log(record))

    def publish_tls_reload(self) -> None:
        return None  # the management API (the owner) reloads

    def want_logs(self, active: bool) -> None:
        return None  # a worker serves no live log

    @property
    def logs_wanted(self) -> bool:
        return self._logs_wanted and self._link is not None

    async def peer_metrics(self) -> list[MetricsSnapshot]:
        return []

    # -- writes ------------------------------------------------------------------------

    def submit(
        self, ops: Sequence[Op], *, detached: bool = False, on_failure: OnFailure | None = None
    ) -> _RemoteTicket:
        ticket = _RemoteTicket(ops, detached, on_failure)
        link = self._link
        if link is None or link.closed:
            ticket.fail(StoreFailed("the store owner is unavailable; nothing was written"))
            return ticket
        self._next_id += 1
        self._pending[self._next_id] = ticket
        link.send(Submit(self._next_id, list(ops)))
        return ticket

    # -- the connection ----------------------------------------------------------------

    async def run(
        self, inbox: Inbox, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Stay connected to the hub until cancelled; ``started`` once first connected."""
        started = False
        delay = RECONNECT_FIRST_S
        while True:
            try:
                stream = await connect_unix(self.address)
            except OSError as exc:
                if delay >= RECONNECT_MAX_S:
                    log.warning("store owner unreachable (%s); retrying", exc)
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_FIRST_S
            link = Link(stream)
            link.send(Hello(self.worker, os.getpid(), self.connection_prefix))
            self._link = link
            self._transition()
            try:
                async with stream, trio.open_nursery() as nursery:
                    nursery.start_soon(link.run_sender)
                    if started:
                        self.reconnects += 1
                        log.info("reconnected to the store owner")
                        nursery.start_soon(inbox.registry_changed, None)
                    else:
                        started = True
                        task_status.started()
                    await self._receive(link, inbox, nursery)
                    nursery.cancel_scope.cancel()
            # except*: the nursery hands a broken stream (ECONNRESET from an owner killed
            # with bytes it never read, not only an end of stream) over in a group
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
                log.warning("store owner connection lost: %r", group.exceptions[0])
            except* (ValueError, msgspec.DecodeError) as group:
                log.error("store owner sent garbage: %r", group.exceptions[0])
            finally:
                self._lost(link)

    async def _receive(self, link: Link, inbox: Inbox, nursery: trio.Nursery) -> None:
        pending = self._pending
        async for frame in link.frames():
            if isinstance(frame, Committed):
                t = pending.pop(frame.id, None)
                if t is not None:
                    t.resolve(frame.results)
            elif isinstance(frame, Failed):
                t = pending.pop(frame.id, None)
                if t is not None:
                    t.fail(rebuild_error(frame.error))
            elif isinstance(frame, Events):
                inbox.events(frame.events)
            elif isinstance(frame, Registry):
                nursery.start_soon(inbox.registry_changed, frame.connector_id)
            elif isinstance(frame, Interest):
                self._logs_wanted = frame.logs
            elif isinstance(frame, TlsReload):
                nursery.start_soon(inbox.reload_tls)
            elif isinstance(frame, SnapshotRequest):
                link.send(Snapshot(frame.id, inbox.snapshot()))
            else:
                raise ValueError(f"unexpected frame {type(frame).__name__}")
        log.warning("the store owner closed the connection")

    def _lost(self, link: Link) -> None:
        link.closed = True
        if self._link is link:
            self._link = None
            self._transition()
        pending, self._pending = self._pending, {}
        if pending:
            log.warning("%d writes in flight failed with the store owner connection", len(pending))
        err = StoreFailed("the store owner went away before the commit; nothing acknowledged")
        for t in pending.values():
            t.fail(err)


class RemoteStore:
    """:class:`gateway.store.api.Store` for a worker: reads from the store's read side (the
    SQLite file through WAL, or PostgreSQL: ``gateway/store/factory.py`` ``read_side``),
    writes through :class:`NodeClient` to the store owner.  ``on_failure`` gets detached
    submissions' failures, in this process (see ``gateway/store/api.py``)."""

    def __init__(self, reads: ReadSide, client: NodeClient, *, on_failure: OnFailure) -> None:
        self.reads = reads
        self.client = client
        self.on_failure = on_failure

    def submit(self, ops: Sequence[Op], *, detached: bool = False) -> _RemoteTicket:
        return self.client.submit(ops, detached=detached, on_failure=self.on_failure)

    async def write(self, ops: Sequence[Op]) -> list[OpResult]:
        return await self.submit(ops).wait()

    def close(self) -> None:
        self.reads.close()

    # -- reads: the read side's ------------------------------------------------------------

    async def stats(self) -> StoreStats:
        return await self.reads.stats()

    async def connectors(self) -> list[ConnectorRow]:
        return await self.reads.connectors()

    async def device(self, connector_id: str, identity: str) -> DeviceRow | None:
        return await self.reads.device(connector_id, identity)

    async def device_by_token_hash(self, connector_id: str, token_hash: str) -> TokenMatch | None:
        return await self.reads.device_by_token_hash(connector_id, token_hash)

    async def list_devices(self, query: DeviceQuery) -> Page:
        return await self.reads.list_devices(query)

    async def device_counts(self, connector_id: str) -> DeviceCounts:
        return await self.reads.device_counts(connector_id)

    async def state(self, device_id: int, aliases: Sequence[str] | None = None) -> list[StateRow]:
        return await self.reads.state(device_id, aliases)

    async def pending(self, device_id: int, since: int = 0) -> list[StateRow]:
        return await self.reads.pending(device_id, since)

    async def events(self, query: EventQuery) -> list[CommittedEvent]:
        return await self.reads.events(query)

    async def last_seq(self, connector_id: str) -> int:
        return await self.reads.last_seq(connector_id)

    async def content(self, connector_id: str, content_id: str) -> ContentRow | None:
        return await self.reads.content(connector_id, content_id)

    async def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]:
        return await self.reads.content_list(connector_id, prefix)

    async def admin_token_known(self, token_hash: str) -> bool:
        return await self.reads.admin_token_known(token_hash)

    async def admin_tokens(self) -> list[AdminToken]:
        return await self.reads.admin_tokens()

    async def integration(self, connector_id: str, name: str) -> IntegrationRecord | None:
        return await self.reads.integration(connector_id, name)

    async def integrations(self, connector_id: str | None = None) -> list[IntegrationRecord]:
        return await self.reads.integrations(connector_id)

    async def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]:
        return await self.reads.integration_health(
            connector_id, name, limit=limit, changes_only=changes_only
        )

    async def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]:
        return await self.reads.integration_runs(connector_id, name, job, limit=limit)

    async def integration_assets(self, connector_id: str, name: str) -> list[AssetRow]:
        return await self.reads.integration_assets(connector_id, name)
