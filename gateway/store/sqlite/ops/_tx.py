"""The context an op handler runs in: the writer's cursor inside the submission's savepoint,
the event appender, and the counter deltas the submission would cause.

A handler must not commit, roll back or release the savepoint: the writer does, and it
applies :attr:`Tx.delta` to the store's counters only once the commit holding the
submission has succeeded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import msgspec

from gateway.store.api import AppendEvent, CommittedEvent

__all__ = ["Delta", "Tx"]

_INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class Delta:
    """How one submission moves the store's gauges (applied after its commit)."""

    __slots__ = ("devices", "event_log_size", "pending_values")

    def __init__(self) -> None:
        self.devices = 0
        self.event_log_size = 0
        self.pending_values = 0

    def add(self, other: Delta) -> None:
        self.devices += other.devices
        self.event_log_size += other.event_log_size
        self.pending_values += other.pending_values


class Tx:
    """One submission's view of the write transaction."""

    __slots__ = ("cur", "delta", "events", "next_seq")

    def __init__(self, cur: sqlite3.Cursor, next_seq: Callable[[sqlite3.Cursor, str], int]) -> None:
        self.cur = cur
        self.next_seq = next_seq  # the writer's per-connector sequence allocator
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

    def count(self, sql: str, args: tuple[object, ...] | list[object]) -> int:
        """The single integer a ``SELECT count(*)`` answers (the handlers' way to know how
        many pending values or devices a statement is about to change)."""
        row = self.cur.execute(sql, args).fetchone()
        return int(row[0] or 0)
