"""Which store backend runs: chosen here, by the ``store`` setting, and nowhere else.

``gateway serve --store postgresql://user@host/db`` (or ``postgres://``) opens the PostgreSQL
store (``gateway/store/postgresql``); an empty setting, the default, the embedded SQLite
store in the data directory (``DIR/gateway.db``).  Everything above ``gateway/store`` gets a
:class:`~gateway.store.api.Store` and cannot tell which (docs/architecture.md "Scale").
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.store.api import Store
from gateway.store.sqlite.writer import OnEvents, OnFailure

__all__ = ["DATABASE", "check_location", "is_postgresql", "open_store"]

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
