"""The PostgreSQL implementation of :class:`gateway.store.api.Store`: the write side
(:class:`~gateway.store.postgresql.writer.PgWriter`, one thread per node, group commit) and
the read side (:class:`~gateway.store.postgresql.reader.PgReader`, a connection pool) behind
one object.  Every read runs in a worker thread: unlike SQLite's WAL snapshot, each is a
round trip to the server.

:class:`PgReads` is the read half alone, for a process that sends its writes elsewhere (a
worker of the multi-process node).  Use :func:`open_store`; the writer thread and the pool
live exactly as long as that context.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import trio

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
    Ticket,
    TokenMatch,
)
from gateway.store.postgresql.reader import PgReader
from gateway.store.postgresql.writer import PgWriter
from gateway.store.sqlite.writer import OnEvents, OnFailure

__all__ = ["PgReadSide", "PgReads", "PgStore", "open_store"]


class PgReads:
    """The read half of :class:`gateway.store.api.Store` over a :class:`PgReader`."""

    reader: PgReader

    async def stats(self) -> StoreStats:
        return StoreStats()  # the counters are the writer's (PgStore overrides)

    async def device(self, connector_id: str, identity: str) -> DeviceRow | None:
        return await trio.to_thread.run_sync(self.reader.device, connector_id, identity)

    async def device_by_token_hash(self, connector_id: str, token_hash: str) -> TokenMatch | None:
        return await trio.to_thread.run_sync(
            self.reader.device_by_token_hash, connector_id, token_hash
        )

    async def state(self, device_id: int, aliases: Sequence[str] | None = None) -> list[StateRow]:
        return await trio.to_thread.run_sync(self.reader.state, device_id, aliases)

    async def pending(self, device_id: int, since: int = 0) -> list[StateRow]:
        return await trio.to_thread.run_sync(self.reader.pending, device_id, since)

    async def events(self, query: EventQuery) -> list[CommittedEvent]:
        return await trio.to_thread.run_sync(self.reader.events, query)

    async def last_seq(self, connector_id: str) -> int:
        return await trio.to_thread.run_sync(self.reader.last_seq, connector_id)

    async def content(self, connector_id: str, content_id: str) -> ContentRow | None:
        return await trio.to_thread.run_sync(self.reader.content, connector_id, content_id)

    async def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]:
        return await trio.to_thread.run_sync(self.reader.content_list, connector_id, prefix)

    async def admin_token_known(self, token_hash: str) -> bool:
        return await trio.to_thread.run_sync(self.reader.admin_token_known, token_hash)

    async def admin_tokens(self) -> list[AdminToken]:
        return await trio.to_thread.run_sync(self.reader.admin_tokens)

    async def integration(self, connector_id: str, name: str) -> IntegrationRecord | None:
        return await trio.to_thread.run_sync(self.reader.integration, connector_id, name)

    async def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]:
        return await trio.to_thread.run_sync(
            lambda: self.reader.integration_health(
                connector_id, name, limit=limit, changes_only=changes_only
            )
        )

    async def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]:
        return await trio.to_thread.run_sync(
            lambda: self.reader.integration_runs(connector_id, name, job, limit=limit)
        )

    async def connectors(self) -> list[ConnectorRow]:
        return await trio.to_thread.run_sync(self.reader.connectors)

    async def list_devices(self, query: DeviceQuery) -> Page:
        return await trio.to_thread.run_sync(self.reader.list_devices, query)

    async def device_counts(self, connector_id: str) -> DeviceCounts:
        return await trio.to_thread.run_sync(self.reader.device_counts, connector_id)

    async def integrations(self, connector_id: str | None = None) -> list[IntegrationRecord]:
        return await trio.to_thread.run_sync(self.reader.integrations, connector_id)

    async def integration_assets(self, connector_id: str, name: str) -> list[AssetRow]:
        return await trio.to_thread.run_sync(self.reader.integration_assets, connector_id, name)


class PgReadSide(PgReads):
    """The read half alone (``gateway/store/factory.py`` ``read_side``): its pool opens in
    the background; ``close()`` blocks until it has closed."""

    def __init__(self, url: str) -> None:
        self.reader = PgReader(url)
        self.reader.pool.open(wait=False)

    def close(self) -> None:
        self.reader.close()


class PgStore(PgReads):
    """See the module docstring and :class:`gateway.store.api.Store` for the contract."""

    def __init__(
        self,
        url: str,
        *,
        on_events: OnEvents | None = None,
        on_failure: OnFailure | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self.writer = PgWriter(url, on_events=on_events, on_failure=on_failure, **options)
        self.reader = PgReader(url)

    async def start(self) -> None:
        """Connect and migrate off the Trio thread, open the read pool, start the writer."""
        await trio.to_thread.run_sync(self.writer.open)
        try:
            await trio.to_thread.run_sync(self.reader.open)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.writer.aclose()  # no thread yet: closes its connection
                await trio.to_thread.run_sync(self.reader.close)
            raise
        self.writer.start()

    async def aclose(self) -> None:
        """Stop after every queued submission has been committed (or failed) and answered."""
        await self.writer.aclose()
        await trio.to_thread.run_sync(self.reader.close)

    def submit(self, ops: Sequence[Op], *, detached: bool = False) -> Ticket:
        return self.writer.submit(ops, detached=detached)

    async def write(self, ops: Sequence[Op]) -> list[OpResult]:
        return await self.writer.submit(ops).wait()

    async def stats(self) -> StoreStats:
        return msgspec.structs.replace(self.writer.stats)


@contextlib.asynccontextmanager
async def open_store(
    url: str,
    *,
    on_events: OnEvents | None = None,
    on_failure: OnFailure | None = None,
    **options: Any,
) -> AsyncIterator[PgStore]:
    """Open (migrating if needed) the PostgreSQL store at ``url`` for the duration of the
    block; on exit, every submission made inside has been answered.  ``options``:
    ``max_batch``, ``event_retention_count``, ``event_retention_age_s``, ``trim_interval_s``."""
    store = PgStore(url, on_events=on_events, on_failure=on_failure, **options)
    await store.start()
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
