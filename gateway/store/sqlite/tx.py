"""The SQLite side of the op handlers' :class:`~gateway.store.ops._tx.Tx` protocol: the
handlers' SQL is SQLite's own (``?`` placeholders), so every call goes straight to the
writer's cursor.  Also the writer's one chore that is not an op: event-log retention.

No row locks (:attr:`SqliteTx.lock_rows` is empty): one writer thread applies every
submission of the process in turn, so a check-and-change in a handler cannot race.
``RETURNING`` needs SQLite 3.35 or later (:func:`require_sqlite`, when the writer opens);
Python's own builds carry a newer one, and the single binary (``scripts/build-binary``)
bundles the build machine's Python with its SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence

from gateway.store.ops._tx import Params, Row, TxBase

__all__ = ["OLDEST", "SqliteTx", "require_sqlite", "trim_events"]

OLDEST = (3, 35, 0)  # INSERT … RETURNING


def require_sqlite(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """Refuse, with a message that says why, an SQLite older than the handlers' SQL needs
    (called when the writer opens: a PostgreSQL store never needs it)."""
    if version < OLDEST:
        have = ".".join(map(str, version))
        raise RuntimeError(
            f"SQLite {have} is too old for the store: 3.35 or later is needed "
            "(INSERT … RETURNING); use a Python built with a newer SQLite, or the single binary"
        )


class SqliteTx(TxBase[sqlite3.Cursor]):
    """One submission's view of the SQLite write transaction."""

    __slots__ = ()

    lock_rows = ""

    def execute(self, sql: str, params: Params = ()) -> int:
        return self.cur.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self.cur.executemany(sql, rows)

    def one(self, sql: str, params: Params = ()) -> Row | None:
        # A ``… RETURNING`` left unfinished here is reset by the cursor's next statement
        # (at the latest the writer's ``RELEASE``); its change was made at the first step.
        row: Row | None = self.cur.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return self.cur.execute(sql, params).fetchall()

    def count(self, sql: str, params: Params) -> int:
        return int(self.cur.execute(sql, params).fetchone()[0] or 0)

    def any_of(self, values: Sequence[object]) -> tuple[str, list[object]]:
        return f"IN ({','.join('?' * len(values))})", list(values)


def trim_events(
    conn: sqlite3.Connection, *, cutoff_us: int, last_seqs: Mapping[str, int], keep: int
) -> int:
    """Event-log retention (older than ``cutoff_us``, or more than ``keep`` per connector)
    and replay-check points older than the cutoff, in one transaction of the writer's
    connection.  Returns the number of events deleted."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute("DELETE FROM events WHERE ts < ?", (cutoff_us,)).rowcount
        for cid, seq in last_seqs.items():
            deleted += conn.execute(
                "DELETE FROM events WHERE connector_id = ? AND seq <= ?", (cid, seq - keep)
            ).rowcount
        conn.execute("DELETE FROM points WHERE ts < ?", (cutoff_us,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted
