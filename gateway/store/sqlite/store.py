"""The SQLite implementation of :class:`gateway.store.api.Store`: the write side
(:class:`~gateway.store.sqlite.writer.SqliteWriter`, one thread, group commit) and the read
side (:class:`~gateway.store.sqlite.reader.SqliteReader`) behind one object.

The two halves are separate on purpose: a worker process of the multi-process node can
pair a local reader with writes sent to the store owner (docs/architecture.md "Scale").

Point lookups (a device, a token, state, pending values, events after a cursor) run on the
caller's thread: an indexed read of a WAL snapshot takes microseconds, less than a hop to a
worker thread.  Listings and whole-table reads run in a worker thread.

Use :func:`open_store`; the writer thread lives exactly as long as that context.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
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
from gateway.store.sqlite.reader import SqliteReader
from gateway.store.sqlite.writer import OnEvents, OnFailure, SqliteWriter, connect

__all__ = ["SqliteReads", "SqliteStore", "integrity_check", "open_store"]


class SqliteReads:
    """The read half of :class:`gateway.store.api.Store` over a :class:`SqliteReader`:
    shared by :class:`SqliteStore` and by a worker's remote store (local reads, writes sent
    to the store owner: ``gateway/bus/client.py``)."""

    reader: SqliteReader

    async def stats(self) -> StoreStats:
        return StoreStats()  # the counters are the writer's (SqliteStore overrides)

    # -- reads on the caller's thread ----------------------------------------------------

    async def device(self, connector_id: str, identity: str) -> DeviceRow | None:
        return self.reader.device(connector_id, identity)

    async def device_by_token_hash(self, connector_id: str, token_hash: str) -> TokenMatch | None:
        return self.reader.device_by_token_hash(connector_id, token_hash)

    async def state(self, device_id: int, aliases: Sequence[str] | None = None) -> list[StateRow]:
        return self.reader.state(device_id, aliases)

    async def pending(self, device_id: int, since: int = 0) -> list[StateRow]:
        return self.reader.pending(device_id, since)

    async def events(self, query: EventQuery) -> list[CommittedEvent]:
        return self.reader.events(query)

    async def last_seq(self, connector_id: str) -> int:
        return self.reader.last_seq(connector_id)

    async def content(self, connector_id: str, content_id: str) -> ContentRow | None:
        return self.reader.content(connector_id, content_id)

    async def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]:
        return self.reader.content_list(connector_id, prefix)

    async def admin_token_known(self, token_hash: str) -> bool:
        return self.reader.admin_token_known(token_hash)

    async def admin_tokens(self) -> list[AdminToken]:
        return self.reader.admin_tokens()

    async def integration(self, connector_id: str, name: str) -> IntegrationRecord | None:
        return self.reader.integration(connector_id, name)

    async def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]:
        return self.reader.integration_health(
            connector_id, name, limit=limit, changes_only=changes_only
        )

    async def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]:
        return self.reader.integration_runs(connector_id, name, job, limit=limit)

    # -- reads in a worker thread --------------------------------------------------------

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


class SqliteStore(SqliteReads):
    """See the module docstring and :class:`gateway.store.api.Store` for the contract."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        on_events: OnEvents | None = None,
        on_failure: OnFailure | None = None,
        **options: Any,
    ) -> None:
        self.path = path
        self.writer = SqliteWriter(
            path, synchronous=synchronous, on_events=on_events, on_failure=on_failure, **options
        )
        self.reader = SqliteReader(path)

    async def start(self) -> None:
        """Open and migrate the database off the Trio thread, then start the writer."""
        await trio.to_thread.run_sync(self.writer.open)
        self.writer.start()

    async def aclose(self) -> None:
        """Stop after every queued submission has been committed and acknowledged."""
        await self.writer.aclose()
        self.reader.close()

    # -- writes ------------------------------------------------------------------------

    def submit(self, ops: Sequence[Op], *, detached: bool = False) -> Ticket:
        return self.writer.submit(ops, detached=detached)

    async def write(self, ops: Sequence[Op]) -> list[OpResult]:
        return await self.writer.submit(ops).wait()

    async def stats(self) -> StoreStats:
        st = self.writer.stats
        return msgspec.structs.replace(
            st,
            commit_seconds_counts=list(st.commit_seconds_counts),
            batch_size_counts=list(st.batch_size_counts),
        )


@contextlib.asynccontextmanager
async def open_store(
    path: Path,
    *,
    synchronous: str = "FULL",
    on_events: OnEvents | None = None,
    on_failure: OnFailure | None = None,
    **options: Any,
) -> AsyncIterator[SqliteStore]:
    """Open (creating and migrating if needed) the store at ``path`` for the duration of
    the block.  The writer thread is started inside and joined on exit, after every
    submission made inside the block has been committed and acknowledged.  ``options``:
    ``max_batch``, ``event_retention_count``, ``event_retention_age_s``, ``trim_interval_s``."""
    store = SqliteStore(
        path, synchronous=synchronous, on_events=on_events, on_failure=on_failure, **options
    )
    await store.start()
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` of the database at ``path`` of a stopped gateway (``ok``
    when intact; the probes and the operator's checks).  Blocking.  The connection may
    write: the last one to close checkpoints the WAL and removes the ``-wal`` and ``-shm``,
    as the gateway's clean stop does."""
    conn = connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
