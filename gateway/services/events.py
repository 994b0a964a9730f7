"""The durable per-connector event log, read by cursor with long-polling.

Events are appended by the store in the same transaction as the state change they
describe; this service only reads them (``seq > after``) and wakes long-polls when the
store reports a commit for their connector.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import msgspec
import trio

from gateway.errors import BadRequest
from gateway.services.connectors import Registry
from gateway.store.api import CommittedEvent, Store

__all__ = ["EventLog", "EventOut"]

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


class EventLog:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self._waiters: dict[str, trio.Event] = {}

    def on_commit(self, events: Iterable[CommittedEvent]) -> None:
        """Called by the store's fan-out in the Trio thread after every commit."""
        for cid in {e.connector_id for e in events}:
            ev = self._waiters.pop(cid, None)
            if ev is not None:
                ev.set()

    def _read(self, cid: str, after: int, limit: int) -> list[EventOut]:
        def q(conn: sqlite3.Connection) -> list[EventOut]:
            rows = conn.execute(
                "SELECT seq, type, identity, ts, connection_id, ip, protocol, reason, payload "
                "FROM events WHERE connector_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (cid, after, limit),
            ).fetchall()
            return [
                EventOut(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    r[7],
                    None if r[8] is None else msgspec.json.decode(r[8]),
                )
                for r in rows
            ]

        return self.store.read(q)

    def last_seq(self, cid: str) -> int:
        row = self.store.read(
            lambda c: c.execute(
                "SELECT max(seq) FROM events WHERE connector_id = ?", (cid,)
            ).fetchone()
        )
        return int(row[0] or 0)

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
            after = self.last_seq(cid)
        items = self._read(cid, after, limit)
        if items or wait == 0:
            return items
        with trio.move_on_after(wait):
            while True:
                ev = self._waiters.get(cid)
                if ev is None:
                    ev = self._waiters[cid] = trio.Event()
                await ev.wait()
                items = self._read(cid, after, limit)
                if items:
                    return items
        return []
