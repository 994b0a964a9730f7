"""The narrow seam between the gateway and its storage.

Everything above this module talks to a :class:`Store`; the SQLite implementation lives in
``gateway/store/sqlite``.  A second backend (distributed SQL + a log engine, docs/architecture.md
"Scale beyond one machine") implements the same protocol.

Writes are *submitted* and *acknowledged*: :meth:`Store.submit` queues a list of operations
and returns a :class:`Ticket`; awaiting ``ticket.wait()`` returns only after the transaction
holding them has committed (docs/architecture.md principle 2, "an acknowledgement means durable").
Many submissions share one commit (group commit).  Operations are typed Structs for the hot
path (:class:`DataIn`, :class:`AppendEvent`) and :class:`Call` for everything else: a
function run in the writer thread inside its own savepoint, so one failing submission rolls
back alone and the others in the same commit are unaffected.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

__all__ = [
    "AppendEvent",
    "Call",
    "CommittedEvent",
    "DataIn",
    "EventMeta",
    "Op",
    "PointWrite",
    "Store",
    "Ticket",
]

T = TypeVar("T")


class EventMeta(msgspec.Struct, frozen=True, gc=False):
    """Who caused an event: the connection and the protocol it spoke."""

    connection_id: str | None = None
    ip: str | None = None
    protocol: str | None = None


class PointWrite(msgspec.Struct, frozen=True, gc=False):
    """One value a device wrote.  ``defined`` points update state; all go to the event log.

    ``settable`` copies the value into ``set`` too (docs/protocol.md §4.2) and clears a pending set
    value (§4.3).  ``replay_check`` is set for device-timestamped points (record,
    ``$resource.batch``): an identical point already stored is acknowledged and not stored
    again (§12 item 14).
    """

    alias: str
    value: str
    timestamp: int  # µs
    defined: bool = True
    settable: bool = False
    replay_check: bool = False


class DataIn(msgspec.Struct, frozen=True, gc=False):
    """A device write request (one HTTP write/record or one MQTT publish): one ``data_in``
    event whose payload groups the points by timestamp, plus the state updates."""

    connector_id: str
    device_id: int
    identity: str
    points: Sequence[PointWrite]
    meta: EventMeta
    timestamp: int  # µs, server time of the request


class AppendEvent(msgspec.Struct, frozen=True, gc=False):
    """A durable event with no other state change (connect, disconnect, publish...)."""

    connector_id: str
    type: str
    identity: str | None
    meta: EventMeta
    timestamp: int
    payload: Any = None
    reason: str | None = None


class Call(msgspec.Struct, frozen=True):
    """Run ``fn(conn, emit)`` in the writer thread, in the submission's savepoint.

    ``emit(AppendEvent)`` appends a durable event in the same transaction.  The function's
    return value is the operation's result.  It must not commit or roll back.
    """

    fn: Callable[[sqlite3.Connection, Callable[[AppendEvent], None]], Any]


Op = DataIn | AppendEvent | Call


class CommittedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: what the event log API returns and live logs fan out."""

    connector_id: str
    seq: int
    timestamp: int
    type: str
    identity: str | None
    connection_id: str | None
    ip: str | None
    protocol: str | None
    reason: str | None
    payload: Any


class Ticket(Protocol):
    """The acknowledgement of a submission."""

    async def wait(self) -> list[Any]:
        """Return the operations' results once committed; raise the submission's error."""
        ...

    @property
    def done(self) -> bool: ...


class Store(Protocol):
    def submit(self, ops: Sequence[Op]) -> Ticket:
        """Queue ``ops`` as one submission (atomic: all or none).  Never blocks."""
        ...

    async def write(self, ops: Sequence[Op]) -> list[Any]:
        """``submit`` then wait for the commit."""
        ...

    async def call(self, fn: Callable[[sqlite3.Connection, Callable[[AppendEvent], None]], T]) -> T:
        """Run one function as its own submission and return its result after commit."""
        ...

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read on the caller's thread (point lookups, small pages)."""
        ...

    async def read_async(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a longer read on a worker thread with its own connection."""
        ...
