"""The durable per-connector event log, read by cursor with long-polling.

Events are appended by the store in the same transaction as the state change they
describe; this service only reads them (``seq > after``) and wakes long-polls when the
store reports a commit for their connector.  The wake-ups live in :class:`CommitSignals`,
which exists before the store does (the store's ``on_events`` fan-out feeds it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import trio

from gateway.errors import BadRequest
from gateway.services.connectors import Registry
from gateway.store.api import CommittedEvent, EventQuery, Store

__all__ = ["CommitSignals", "EventLog", "EventOut"]

MAX_LIMIT = 1000
MAX_WAIT_S = 300.0


class EventOut(msgspec.Struct, frozen=True, omit_defaults=False):
    """The event object of docs/protocol.md §6.6 plus its cursor ``seq``."""

    seq: int
    type: str
    identity: str | None
    timestamp: int
    connection_id: str | None
    ip: str | None
    protocol: str | None
    reason: str | None
    payload: Any


class CommitSignals:
    """One :class:`trio.Event` per connector that someone waits on, set (and forgotten) at
    the next commit holding an event of that connector.  Trio thread only."""

    def __init__(self) -> None:
        self._waiters: dict[str, trio.Event] = {}

    def on_commit(self, events: Iterable[CommittedEvent]) -> None:
        """Called by the store's fan-out in the Trio thread after every commit."""
        for cid in {e.connector_id for e in events}:
            ev = self._waiters.pop(cid, None)
            if ev is not None:
                ev.set()

    def next_commit(self, connector_id: str) -> trio.Event:
        """An event set at the connector's next commit (shared by every waiter)."""
        ev = self._waiters.get(connector_id)
        if ev is None:
            ev = self._waiters[connector_id] = trio.Event()
        return ev


def _out(e: CommittedEvent) -> EventOut:
    return EventOut(
        e.seq,
        e.type,
        e.identity,
        e.timestamp,
        e.connection_id,
        e.ip,
        e.protocol,
        e.reason,
        e.payload,
    )


class EventLog:
    def __init__(self, store: Store, registry: Registry, signals: CommitSignals) -> None:
        self.store = store
        self.registry = registry
        self.signals = signals

    async def _read(self, cid: str, after: int, limit: int) -> list[EventOut]:
        return [_out(e) for e in await self.store.events(EventQuery(cid, after, limit))]

    async def last_seq(self, cid: str) -> int:
        return await self.store.last_seq(cid)

    async def read(
        self, cid: str, *, after: int = 0, limit: int = 100, wait: float = 0.0
    ) -> list[EventOut]:
        """Events with ``seq > after``; when there are none, wait up to ``wait`` seconds
        for the next commit of this connector.  ``after=-1`` means "from now"."""
        self.registry.require(cid)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be 1..{MAX_LIMIT}")
        if wait < 0 or wait > MAX_WAIT_S:
            raise BadRequest(f"wait must be 0..{MAX_WAIT_S:g} seconds")
        if after < 0:
            after = await self.last_seq(cid)
        items = await self._read(cid, after, limit)
        if items or wait == 0:
            return items
        with trio.move_on_after(wait):
            while True:
                # Take the wake-up before reading: a commit landing while the read runs
                # (a backend may read in a thread) then still wakes this poll.
                commit = self.signals.next_commit(cid)
                items = await self._read(cid, after, limit)
                if items:
                    return items
                await commit.wait()
        return []
