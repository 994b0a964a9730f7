"""The context an op handler runs in, as both backends provide it: the writer's cursor
inside the submission's transaction, the event appender, and the counter deltas the
submission would cause.

The handlers (``gateway/store/ops/``) are written once, against the :class:`Tx` protocol;
``gateway/store/sqlite/tx.py`` and ``gateway/store/postgresql/tx.py`` implement it
(docs/decisions.md "Store seam", "One set of op handlers").  The rules the handlers' SQL
keeps so that one text serves both engines:

* placeholders are SQLite's plain ``?`` (never ``?NNN``: a value used twice is passed
  twice); the PostgreSQL Tx turns a statement into psycopg's ``%s`` form once per distinct
  statement text and caches it, so the write hot path pays a dictionary look-up, no parse;
* only forms both accept: ``INSERT … ON CONFLICT (…) DO NOTHING / DO UPDATE`` (not
  ``INSERT OR IGNORE / OR REPLACE``), ``RETURNING`` (SQLite 3.35 or later), arithmetic on
  values done in Python rather than on untyped parameters;
* where the engines really differ, the Tx says how, and the handler stays one:
  :attr:`Tx.lock_rows` (``FOR UPDATE`` on PostgreSQL, where nodes race on a row; nothing on
  SQLite, whose single writer serialises everything) and :meth:`Tx.any_of` (an ``IN``
  list of host parameters, or one array parameter).  The lock *ordering* of the event
  counters stays in the PostgreSQL writer, before any handler runs.

A handler must not commit, roll back or release the savepoint: the writer does, and it
applies :attr:`Tx.delta` to the store's counters only once the commit holding the
submission has succeeded.  A refusal is raised as a :mod:`gateway.errors` class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from gateway.store.api import AppendEvent, CommittedEvent

__all__ = ["ANY_OF_MAX", "INSERT_EVENT", "Cursor", "Delta", "Params", "Row", "Tx", "TxBase"]

Row = tuple[Any, ...]
Params = Sequence[Any]

ANY_OF_MAX = 500  # values per :meth:`Tx.any_of` (SQLite's host parameters per statement)
INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


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


class Tx(Protocol):
    """One submission's view of the write transaction, whichever the engine."""

    delta: Delta
    events: list[CommittedEvent]
    lock_rows: str
    """Appended to a ``SELECT`` that reads a row the handler then changes (check-and-change):
    ``" FOR UPDATE"`` where other writers may race for the row, else ``""``."""

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter row."""
        ...

    def one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of ``sql`` (a ``SELECT`` or a ``… RETURNING``), or None."""
        ...

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of ``sql``."""
        ...

    def count(self, sql: str, params: Params) -> int:
        """The single integer a ``SELECT count(*)`` answers (the handlers' way to know how
        many pending values or devices a statement is about to change)."""
        ...

    def any_of(self, values: Sequence[object]) -> tuple[str, list[object]]:
        """``(fragment, params)`` testing a column against ``values``: the fragment follows
        the column (``f"alias {fragment}"``) and ``params`` take its place among the
        statement's.  At most :data:`ANY_OF_MAX` values (callers chunk longer lists)."""
        ...

    def emit(self, ev: AppendEvent) -> int:
        """Append ``ev`` to the event log in this transaction; returns its sequence number.
        The committed event reaches ``on_events`` after the commit."""
        ...


class Cursor(Protocol):
    """What :class:`TxBase` needs of a DB-API cursor (``sqlite3`` and psycopg 3 alike)."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


C = TypeVar("C", bound=Cursor)


class TxBase(Generic[C]):
    """What both backends' Tx share: the cursor, the writer's per-connector sequence
    allocator, the events and the delta, and :meth:`emit` on top of them.  ``_insert_event``
    is :data:`INSERT_EVENT` in the engine's placeholder style."""

    __slots__ = ("cur", "delta", "events", "next_seq")

    _insert_event = INSERT_EVENT

    def __init__(self, cur: C, next_seq: Callable[[C, str], int]) -> None:
        self.cur = cur
        self.next_seq = next_seq  # the writer's allocator (docs of each writer)
        self.events: list[CommittedEvent] = []
        self.delta = Delta()

    def emit(self, ev: AppendEvent) -> int:
        seq = self.next_seq(self.cur, ev.connector_id)
        m = ev.meta
        payload = None if ev.payload is None else msgspec.json.encode(ev.payload)
        self.cur.execute(
            self._insert_event,
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
