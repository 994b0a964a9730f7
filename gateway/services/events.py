"""The durable per-connector event log, read by cursor with long-polling, forwards or
backwards, filtered by identity, type, peer address and time (docs/protocol.md §6.6).

Events are appended by the store in the same transaction as the state change they
describe; this service only reads them and wakes long-polls when the store reports a
commit for their connector.  The wake-ups live in :class:`CommitSignals`, which exists
before the store does (the store's ``on_events`` fan-out feeds it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import msgspec
import trio

from gateway.errors import BadRequest
from gateway.services.connectors import Registry
from gateway.store.api import CommittedEvent, EventQuery, Store

__all__ = ["EVENT_TYPES", "CommitSignals", "EventFilter", "EventLog", "EventOut"]

# Every event type the gateway records (docs/protocol.md §6.5); a filter naming another is
# a typo, answered 400 rather than an empty page.
EVENT_TYPES = (
    "provisioned",
    "connect",
    "disconnect",
    "data_in",
    "data_out",
    "publish",
    "content_in",
    "deleted",
    "integration_health",
    "connection_refused",
    "activation_refused",
    "write_refused",
    "request_refused",
)
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


class EventFilter(msgspec.Struct, frozen=True):
    """What narrows a read: one identity, any of ``types``, one peer address, a time range
    (µs, both ends inclusive).  Empty: every event."""

    identity: str | None = None
    types: tuple[str, ...] = ()
    ip: str | None = None
    since: int | None = None
    until: int | None = None

    def check(self) -> None:
        """Raise ``BadRequest`` for an unknown type, a malformed address or a time range
        that ends before it starts."""
        for t in self.types:
            if t not in EVENT_TYPES:
                raise BadRequest(f"unknown event type {t!r} (known: {', '.join(EVENT_TYPES)})")
        if self.ip is not None:
            try:
                ipaddress.ip_address(self.ip)
            except ValueError:
                raise BadRequest("ip must be an IPv4 or IPv6 address") from None
        if self.since is not None and self.until is not None and self.since > self.until:
            raise BadRequest("since must not be after until")


NO_FILTER = EventFilter()


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

    async def _read(self, query: EventQuery) -> list[EventOut]:
        return [_out(e) for e in await self.store.events(query)]

    async def last_seq(self, cid: str) -> int:
        return await self.store.last_seq(cid)

    def _check(self, cid: str, limit: int, filt: EventFilter) -> None:
        self.registry.require(cid)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be 1..{MAX_LIMIT}")
        filt.check()

    async def read(
        self,
        cid: str,
        *,
        after: int = 0,
        limit: int = 100,
        wait: float = 0.0,
        filt: EventFilter = NO_FILTER,
    ) -> list[EventOut]:
        """Events with ``seq > after`` that pass ``filt``, oldest first; when there are
        none, wait up to ``wait`` seconds for a commit that brings one.  ``after=-1`` means
        "from now"."""
        self._check(cid, limit, filt)
        after = await self._after(cid, after, wait)
        query = EventQuery(
            cid,
            after,
            limit,
            identity=filt.identity,
            types=filt.types,
            ip=filt.ip,
            since=filt.since,
            until=filt.until,
        )
        return await self._read_waiting(query, wait)

    async def _after(self, cid: str, after: int, wait: float) -> int:
        """``after`` resolved (-1: the current end), once ``wait`` is known to be valid."""
        if wait < 0 or wait > MAX_WAIT_S:
            raise BadRequest(f"wait must be 0..{MAX_WAIT_S:g} seconds")
        return await self.last_seq(cid) if after < 0 else after

    async def _read_waiting(self, query: EventQuery, wait: float) -> list[EventOut]:
        """``query``'s events; when there are none, wait up to ``wait`` seconds for a
        commit that brings one (a long-poll)."""
        items = await self._read(query)
        if items or wait == 0:
            return items
        with trio.move_on_after(wait):
            while True:
                # Take the wake-up before reading: a commit landing while the read runs
                # (a backend may read in a thread) then still wakes this poll.
                commit = self.signals.next_commit(query.connector_id)
                items = await self._read(query)
                if items:
                    return items
                await commit.wait()
        return []

    async def read_back(
        self,
        cid: str,
        *,
        before: int = -1,
        after: int = 0,
        limit: int = 100,
        wait: float = 0.0,
        filt: EventFilter = NO_FILTER,
    ) -> tuple[list[EventOut], int | None]:
        """Events with ``after < seq < before`` that pass ``filt``, newest first, and the
        cursor of the next (older) page: the last item's seq, or None when no older event
        passes.  ``before=-1`` starts at the newest event; ``after`` bounds the walk from
        below (0: the oldest; -1: now, so only events still to come).  When there are
        none, wait up to ``wait`` seconds for a commit that brings one ("the newest refusal
        of this device, as soon as there is one")."""
        self._check(cid, limit, filt)
        if before < -1:
            raise BadRequest("before must be -1 (the newest) or a sequence number")
        after = await self._after(cid, after, wait)
        query = EventQuery(
            cid,
            after=after,
            limit=limit + 1,  # one more tells whether an older page exists
            before=2**62 if before == -1 else before,
            identity=filt.identity,
            types=filt.types,
            ip=filt.ip,
            since=filt.since,
            until=filt.until,
        )
        items = await self._read_waiting(query, wait)
        if len(items) > limit:
            return items[:limit], items[limit - 1].seq
        return items, None
