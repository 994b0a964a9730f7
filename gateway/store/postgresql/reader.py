"""The PostgreSQL read side: the shared queries on a ``psycopg_pool`` of autocommit
connections.

Every method here is blocking and borrows one pooled connection for its statements;
:class:`gateway.store.postgresql.store.PgStore` runs each in a worker thread (a read is a
network round trip, never something for the Trio thread).  The queries are
``gateway/store/reads.py``'s, written once for both backends in ``?`` style; this module
turns them into psycopg's ``%s`` style (:func:`~gateway.store.postgresql.tx.pg_sql`, once
per distinct text), tests a list as one array parameter (``= ANY(%s)``), and finds the
newest event in the counter row that only commits move.  Each query walks the same key as
on SQLite (the tag filter: the ``tags`` primary key, docs/decisions.md "PostgreSQL").

A pooled connection that the server dropped (a restart) fails its next statement; the read
is tried once more on a connection of its own, since reads change nothing.  A read that
still fails raises :class:`~gateway.errors.StoreFailed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from gateway.errors import StoreFailed
from gateway.store.postgresql.tx import pg_sql
from gateway.store.reads import Reads

__all__ = ["PgReader"]

T = TypeVar("T")
Row = tuple[Any, ...]
POOL_WAIT_S = 2.0
CONNECT_TIMEOUT_S = 5
Conn = psycopg.Connection[tuple[Any, ...]]


class _Conn:
    """A borrowed connection as :class:`gateway.store.reads.ReadConn`."""

    __slots__ = ("conn",)

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self.conn.execute(pg_sql(sql), params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(pg_sql(sql), params).fetchall()

    def any_of(self, values: Sequence[object]) -> tuple[str, list[object]]:
        return "= ANY(?)", [list(values)]


class PgReader(Reads):
    """Typed reads (blocking, thread-safe: each call borrows its own pooled connection)."""

    last_seq_sql = "SELECT seq FROM event_seq WHERE connector_id = ?"

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "application_name": "gateway-read"},
            open=False,
            # How long a read waits for a connection: reads take milliseconds, so waiting
            # longer only means the server is gone, and the caller should hear it soon.
            timeout=POOL_WAIT_S,
            name="gateway-read",
        )

    def open(self) -> None:
        """Open the pool and wait for its first connection (blocking)."""
        self.pool.open(wait=True, timeout=10.0)

    def close(self) -> None:
        self.pool.close()

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with self.pool.connection() as conn:
                return fn(_Conn(conn), *args)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
            pass  # a connection the server dropped, or a pool still backing off: see below
        # Once more on a connection of its own: the pool refills in the background with a
        # growing back-off after an outage, and a read must not wait for that when the
        # server is back (nor hang when it is not: the connect is refused at once).
        try:
            with psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as conn:
                return fn(_Conn(conn), *args)
        except psycopg.OperationalError as exc:
            raise StoreFailed(f"the database is not reachable: {exc}") from exc
