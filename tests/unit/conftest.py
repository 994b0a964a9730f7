"""Fixtures of the unit tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.store.sqlite import SqliteStore

CheckCounters = Callable[[SqliteStore], Awaitable[None]]


def db_counts(path: Path) -> tuple[int, int, int]:
    """Devices, events, pending values counted straight from the file (the tests' oracle
    for the counters the store keeps incrementally)."""
    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute("SELECT count(*) FROM devices").fetchone()[0],
            conn.execute("SELECT count(*) FROM events").fetchone()[0],
            conn.execute("SELECT count(*) FROM state WHERE pending = 1").fetchone()[0],
        )
    finally:
        conn.close()


@pytest.fixture
def counters_exact() -> CheckCounters:
    """``await counters_exact(store)``: the store's gauges equal the rows in its file."""

    async def check(store: SqliteStore) -> None:
        st = await store.stats()
        assert (st.devices, st.event_log_size, st.pending_values) == db_counts(store.path)

    return check
