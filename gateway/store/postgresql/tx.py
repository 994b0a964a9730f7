"""The PostgreSQL side of the op handlers' :class:`~gateway.store.ops._tx.Tx` protocol.

The handlers' SQL is written once, in SQLite's ``?`` style (``gateway/store/ops/_tx.py``);
:func:`pg_sql` turns a statement into psycopg's ``%s`` style (a literal ``%`` doubled) the
first time it meets that text and caches the result, so the hot path pays one dictionary
look-up per statement.  The texts are the handlers' constants plus the few built from a
column list or an :meth:`PgTx.any_of` fragment (one array parameter, so not one text per
list length): a bounded set; the cache stops growing at :data:`_CACHE_MAX` all the same.

Check-and-change reads lock their row (:attr:`PgTx.lock_rows` is ``" FOR UPDATE"``): nodes
of a cluster write concurrently, and the second of two racing for one row must see the
first's result.  The event counters' lock order is the writer's business
(``gateway/store/postgresql/writer.py``), settled before any handler runs.

Also the writer's one chore that is not an op: event-log retention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

from gateway.store.ops._tx import INSERT_EVENT, Params, Row, TxBase

__all__ = ["Cursor", "PgTx", "pg_sql", "trim_events"]

Cursor = psycopg.Cursor[tuple[Any, ...]]

_CACHE: dict[str, str] = {}
_CACHE_MAX = 4096
_NUMBERED = re.compile(r"\?\d")


def pg_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders as psycopg's ``%s`` (outside string literals; a
    ``%`` doubled), cached per distinct text.  Raises ``ValueError`` for a numbered
    placeholder (``?1``): the shared SQL passes a value twice instead."""
    out = _CACHE.get(sql)
    if out is not None:
        return out
    parts = sql.split("'")
    for i in range(0, len(parts), 2):  # even parts are outside '…' literals
        if _NUMBERED.search(parts[i]):
            raise ValueError(f"numbered placeholder in shared SQL: {sql!r}")
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    out = "'".join(parts)
    if len(_CACHE) < _CACHE_MAX:
        _CACHE[sql] = out
    return out


class PgTx(TxBase[Cursor]):
    """One submission's view of the PostgreSQL write transaction."""

    __slots__ = ()

    lock_rows = " FOR UPDATE"
    _insert_event = pg_sql(INSERT_EVENT)

    def execute(self, sql: str, params: Params = ()) -> int:
        return self.cur.execute(pg_sql(sql), params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        rows = list(rows)
        if len(rows) == 1:  # one round trip instead of executemany's pipeline set-up
            self.cur.execute(pg_sql(sql), rows[0])
        elif rows:
            self.cur.executemany(pg_sql(sql), rows)

    def one(self, sql: str, params: Params = ()) -> Row | None:
        return self.cur.execute(pg_sql(sql), params).fetchone()

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return self.cur.execute(pg_sql(sql), params).fetchall()

    def count(self, sql: str, params: Params) -> int:
        row = self.cur.execute(pg_sql(sql), params).fetchone()
        return int(row[0] or 0) if row else 0

    def any_of(self, values: Sequence[object]) -> tuple[str, list[object]]:
        return "= ANY(?)", [list(values)]


def trim_events(
    conn: psycopg.Connection[tuple[Any, ...]],
    *,
    cutoff_us: int,
    last_seqs: Mapping[str, int],
    keep: int,
) -> int:
    """Event-log retention (older than ``cutoff_us``, or more than ``keep`` per connector)
    and replay-check points older than the cutoff, in one transaction.  Returns the number
    of events deleted."""
    with conn.transaction(), conn.cursor() as cur:
        deleted = cur.execute("DELETE FROM events WHERE ts < %s", (cutoff_us,)).rowcount
        for cid, seq in last_seqs.items():
            deleted += cur.execute(
                "DELETE FROM events WHERE connector_id = %s AND seq <= %s", (cid, seq - keep)
            ).rowcount
        cur.execute("DELETE FROM points WHERE ts < %s", (cutoff_us,))
    return deleted
