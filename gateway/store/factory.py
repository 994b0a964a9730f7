"""Which store backend runs: chosen here, by the ``store`` setting, and nowhere else.

``gateway serve --store postgresql://user@host/db`` (or ``postgres://``) opens the PostgreSQL
store (``gateway/store/postgresql``); an empty setting, the default, the embedded SQLite
store in the data directory (``DIR/gateway.db``).  Everything above ``gateway/store`` gets a
:class:`~gateway.store.api.Store` and cannot tell which (docs/architecture.md "Scale").

:func:`open_store` is the whole store (the process that owns the writer); :func:`read_side`
is the read half alone, for a worker of the multi-process node that sends its writes to the
store owner (``gateway/bus/client.py``): SQLite's file (WAL) or a PostgreSQL pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

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
    Page,
    RunRow,
    StateRow,
    Store,
    StoreStats,
    TokenMatch,
)
from gateway.store.sqlite import SqliteReader, SqliteReads
from gateway.store.sqlite.writer import OnEvents, OnFailure

__all__ = ["DATABASE", "ReadSide", "check_location", "is_postgresql", "open_store", "read_side"]

DATABASE = "gateway.db"  # the SQLite store's file in the data directory
_PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgresql(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database (a ``postgresql://`` URL)."""
    return location.startswith(_PG_SCHEMES)


def check_location(location: str) -> None:
    """Raise ``ValueError`` for a ``store`` setting that names no backend."""
    if location and not is_postgresql(location):
        raise ValueError(
            f"store must be empty (SQLite in the data directory) or a postgresql:// URL, "
            f"not {location!r}"
        )


@contextlib.asynccontextmanager
async def open_store(
    location: str,
    *,
    data_dir: Path,
    synchronous: str = "FULL",
    on_events: OnEvents | None = None,
    on_failure: OnFailure | None = None,
    **options: Any,
) -> AsyncIterator[Store]:
    """Open the store ``location`` names for the duration of the block (see the module
    docstring); ``synchronous`` is SQLite's, ``options`` both backends' (``max_batch``,
    ``event_retention_count``, ``event_retention_age_s``, ``trim_interval_s``)."""
    check_location(location)
    if is_postgresql(location):
        from gateway.store.postgresql import open_store as open_pg

        async with open_pg(location, on_events=on_events, on_failure=on_failure, **options) as pg:
            yield pg
        return
    from gateway.store.sqlite import open_store as open_sqlite

    async with open_sqlite(
        data_dir / DATABASE,
        synchronous=synchronous,
        on_events=on_events,
        on_failure=on_failure,
        **options,
    ) as lite:
        yield lite


class ReadSide(Protocol):
    """The read half of :class:`~gateway.store.api.Store` (its reads, as documented there),
    plus ``close()``."""

    def close(self) -> None: ...

    async def stats(self) -> StoreStats: ...

    async def connectors(self) -> list[ConnectorRow]: ...

    async def device(self, connector_id: str, identity: str) -> DeviceRow | None: ...

    async def device_by_token_hash(
        self, connector_id: str, token_hash: str
    ) -> TokenMatch | None: ...

    async def list_devices(self, query: DeviceQuery) -> Page: ...

    async def device_counts(self, connector_id: str) -> DeviceCounts: ...

    async def state(
        self, device_id: int, aliases: Sequence[str] | None = None
    ) -> list[StateRow]: ...

    async def pending(self, device_id: int, since: int = 0) -> list[StateRow]: ...

    async def events(self, query: EventQuery) -> list[CommittedEvent]: ...

    async def last_seq(self, connector_id: str) -> int: ...

    async def content(self, connector_id: str, content_id: str) -> ContentRow | None: ...

    async def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]: ...

    async def admin_token_known(self, token_hash: str) -> bool: ...

    async def admin_tokens(self) -> list[AdminToken]: ...

    async def integration(self, connector_id: str, name: str) -> IntegrationRecord | None: ...

    async def integrations(self, connector_id: str | None = None) -> list[IntegrationRecord]: ...

    async def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]: ...

    async def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]: ...

    async def integration_assets(self, connector_id: str, name: str) -> list[AssetRow]: ...


class _SqliteReadSide(SqliteReads):
    def __init__(self, path: Path) -> None:
        self.reader = SqliteReader(path)

    def close(self) -> None:
        self.reader.close()


def read_side(location: str, data_dir: Path) -> ReadSide:
    """The read half of the store ``location`` names (see the module docstring); the caller
    closes it (``close()``, blocking for PostgreSQL's pool) when no read runs any more."""
    check_location(location)
    if is_postgresql(location):
        from gateway.store.postgresql.store import PgReadSide

        return PgReadSide(location)
    return _SqliteReadSide(data_dir / DATABASE)
