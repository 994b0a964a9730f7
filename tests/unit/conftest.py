"""Fixtures of the unit tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

CheckCounters = Callable[[Any], Awaitable[None]]


def db_counts(store: Any) -> tuple[int, int, int]:
    """Devices, events, pending values counted straight from the store's database (the
    tests' oracle for the counters the store keeps incrementally), of either backend."""
    sql = (
        "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM events), "
        "(SELECT count(*) FROM state WHERE pending = 1)"
    )
    if hasattr(store, "url"):
        import psycopg

        with psycopg.connect(store.url) as pg:
            row = pg.execute(sql).fetchone()
    else:
        conn = sqlite3.connect(store.path)
        try:
            row = conn.execute(sql).fetchone()
        finally:
            conn.close()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@pytest.fixture
def counters_exact() -> CheckCounters:
    """``await counters_exact(store)``: the store's gauges equal the rows in its database."""

    async def check(store: Any) -> None:
        st = await store.stats()
        assert (st.devices, st.event_log_size, st.pending_values) == db_counts(store)

    return check
