"""The SQLite read side: the shared queries on per-thread read-only connections.

WAL lets every reader see the last committed snapshot while the writer writes, so a read
never waits for a commit.  Each thread that reads gets its own connection (``query_only``),
created on first use and closed by :meth:`SqliteReader.close`.  The queries themselves are
``gateway/store/reads.py``'s, written once for both backends; this module says where they
run (the calling thread's connection) and how SQLite spells what the engines spell
differently (an ``IN`` list of host parameters, the newest event as ``max(seq)``).  The
methods are blocking; :class:`gateway.store.sqlite.store.SqliteStore` decides which run on
the caller's thread (point lookups: microseconds) and which in a worker thread (listings).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.store.reads import EVENT_TS_SKEW_US, Reads, encode_cursor
from gateway.store.sqlite.writer import connect

__all__ = ["EVENT_TS_SKEW_US", "SqliteReader", "encode_cursor"]

T = TypeVar("T")
Row = tuple[Any, ...]


class _Conn:
    """One thread's read-only connection as :class:`gateway.store.reads.ReadConn`."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def any_of(self, values: Sequence[object]) -> tuple[str, list[object]]:
        return f"IN ({','.join('?' * len(values))})", list(values)


class SqliteReader(Reads):
    """Typed reads (blocking).  Thread-safe: each thread uses its own connection."""

    last_seq_sql = "SELECT max(seq) FROM events WHERE connector_id = ?"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        c: _Conn | None = getattr(self._local, "c", None)
        if c is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            c = self._local.c = _Conn(conn)
            with self._lock:
                self._conns.append(conn)
        return fn(c, *args)

    def close(self) -> None:
        """Close every thread's connection (when no read is running any more)."""
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
