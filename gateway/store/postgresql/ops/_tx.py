"""The context a PostgreSQL op handler runs in: the writer's cursor inside the submission's
savepoint, the event appender, and the counter deltas the submission would cause.

As in ``gateway/store/sqlite/ops/_tx.py``: a handler must not commit, roll back or release
the savepoint; the writer does, and applies :attr:`Tx.delta` to the counters only once the
commit holding the submission has succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import psycopg

from gateway.store.api import AppendEvent, CommittedEvent
from gateway.store.sqlite.ops._tx import Delta

__all__ = ["Cursor", "Delta", "Tx"]

Cursor = psycopg.Cursor[tuple[Any, ...]]

_INSERT_EVENT = "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


class Tx:
    """One submission's view of the write transaction."""

    __slots__ = ("cur", "delta", "events", "next_seq")

    def __init__(self, cur: Cursor, next_seq: Callable[[Cursor, str], int]) -> None:
        self.cur = cur
        self.next_seq = next_seq  # the writer's per-connector allocator (event_seq rows)
        self.events: list[CommittedEvent] = []
        self.delta = Delta()

    def emit(self, ev: AppendEvent) -> int:
        """Append ``ev`` to the event log in this transaction; returns its sequence number.
        The committed event reaches ``on_events`` after the commit."""
        seq = self.next_seq(self.cur, ev.connector_id)
        m = ev.meta
        payload = None if ev.payload is None else msgspec.json.encode(ev.payload)
        self.cur.execute(
            _INSERT_EVENT,
            (
                ev.connector_id,
                seq,
                ev.timestamp,
                ev.type,
                ev.identity,
                m.connection_id,
                m.ip,
                m.protocol,
                ev.reason,
                payload,
            ),
        )
        self.events.append(
            CommittedEvent(
                ev.connector_id,
                seq,
                ev.timestamp,
                ev.type,
                ev.identity,
                m.connection_id,
                m.ip,
                m.protocol,
                ev.reason,
                ev.payload,
            )
        )
        self.delta.event_log_size += 1
        return seq

    def one(self, sql: str, args: tuple[object, ...] | list[object] = ()) -> tuple[Any, ...] | None:
        """The first row of ``sql``, or None."""
        return self.cur.execute(sql, args).fetchone()

    def count(self, sql: str, args: tuple[object, ...] | list[object]) -> int:
        """The single integer a ``SELECT count(*)`` answers."""
        row = self.cur.execute(sql, args).fetchone()
        return int(row[0] or 0) if row else 0
