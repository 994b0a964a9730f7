"""Live logs: the connector's events and debug diagnostics, fanned out as they happen.

Not persisted (the durable record is the event log).  Each subscriber has a bounded
buffer; one that cannot keep up is dropped — its stream ends with a final ``dropped`` line —
rather than slowing the gateway (docs/protocol.md §9).  A debug record keyed only by IP
(a TLS or SNI failure before any connector is known) reaches subscribers filtering on that
IP, whatever connector they watch.

In a multi-process node the subscribers live in the management process and most debug
records happen in workers: a worker's hub forwards its debug records over the bus only
while the bus says someone wants them (:attr:`Bus.logs_wanted`), and the management
process's hub tells the bus when it has subscribers (:meth:`Bus.want_logs`).  Records that
arrive from the bus go through :meth:`LogHub.deliver`, which never forwards them again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import trio

from gateway.bus.api import Bus, LocalBus
from gateway.clock import now_us
from gateway.errors import GatewayError, StorageFull, debug_reason
from gateway.model import LogRecord
from gateway.store.api import CommittedEvent, EventMeta, Op

__all__ = ["LogFilter", "LogHub", "Subscription"]

log = logging.getLogger(__name__)
SUBSCRIBER_BUFFER = 1024  # records; a slower subscriber is dropped


class LogFilter:
    __slots__ = ("connector_id", "identity", "ip", "kinds")

    def __init__(
        self,
        connector_id: str | None,
        *,
        kinds: Iterable[str] = ("events", "debug"),
        identity: str | None = None,
        ip: str | None = None,
    ) -> None:
        self.connector_id = connector_id
        self.kinds = frozenset(kinds)
        self.identity = identity
        self.ip = ip

    def matches(self, rec: LogRecord) -> bool:
        if rec.kind not in self.kinds:
            return False
        if self.ip is not None:
            if rec.ip != self.ip:
                return False
            # pre-authentication records carry no connector: an IP filter shows them
            if rec.connector_id is not None and rec.connector_id != self.connector_id:
                return False
        elif rec.connector_id != self.connector_id:
            return False
        return self.identity is None or rec.identity == self.identity


class Subscription:
    __slots__ = ("dropped", "filter", "receive", "send")

    def __init__(self, filt: LogFilter, buffer: int) -> None:
        self.filter = filt
        self.send, self.receive = trio.open_memory_channel[LogRecord](buffer)
        self.dropped = False


class LogHub:
    def __init__(self, *, buffer: int = SUBSCRIBER_BUFFER, bus: Bus | None = None) -> None:
        self._subs: set[Subscription] = set()
        self._buffer = buffer
        self._bus = bus or LocalBus()
        self.published = 0
        self.dropped_subscribers = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(self, rec: LogRecord) -> None:
        """Trio thread only.  Never blocks; O(subscribers).  A debug record also goes to
        the bus while a subscriber elsewhere wants it."""
        if rec.kind == "debug" and self._bus.logs_wanted:
            self._bus.publish_log(rec)
        self.deliver(rec)

    def deliver(self, rec: LogRecord) -> None:
        """Fan ``rec`` out to this process's subscribers (records from the bus come in
        here: they are never forwarded again)."""
        self.published += 1
        if log.isEnabledFor(logging.DEBUG) and rec.kind == "debug":
            log.debug(
                "%s ip=%s identity=%s %s %s",
                rec.event,
                rec.ip,
                rec.identity,
                rec.reason,
                rec.detail or "",
            )
        if not self._subs:
            return
        for sub in list(self._subs):
            if not sub.filter.matches(rec):
                continue
            try:
                sub.send.send_nowait(rec)
            except trio.WouldBlock:
                sub.dropped = True
                self.dropped_subscribers += 1
                self._forget(sub)
                sub.send.close()
            except trio.ClosedResourceError:
                self._forget(sub)

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            if not self._subs:
                self._bus.want_logs(False)

    def publish_events(self, events: Sequence[CommittedEvent]) -> None:
        """Committed events as ``events`` records (the process that owns the store sees
        every commit first-hand; workers' hubs get none)."""
        if not self._subs:  # nobody watches: count, but build no records (hot path)
            self.published += len(events)
            return
        for ev in events:
            detail = None
            if ev.type in ("data_in", "publish") and ev.payload is not None:
                detail = _short(ev.payload)
            self.deliver(
                LogRecord(
                    kind="events",
                    timestamp=ev.timestamp,
                    connector_id=ev.connector_id,
                    ip=ev.ip,
                    identity=ev.identity,
                    connection_id=ev.connection_id,
                    protocol=ev.protocol,
                    event=ev.type,
                    reason=ev.reason,
                    detail=detail,
                )
            )

    def store_failed(self, ops: Sequence[Op], error: GatewayError) -> None:
        """The store's ``on_failure``: a submission nobody awaits (connect/disconnect
        bookkeeping, an MQTT will) failed.  Logged with the ops and the reason, and
        published as a ``store_write_failed`` debug record of the device's connector, so the
        operator watching the live log sees it (docs/decisions.md)."""
        names = ", ".join(type(op).__name__ for op in ops)
        reason = debug_reason(error)
        # a full disk refuses every write; the store logged that once (docs/decisions.md)
        level = logging.DEBUG if isinstance(error, StorageFull) else logging.WARNING
        log.log(level, "store submission (%s) failed: %s: %s", names, reason, error.message)
        first = ops[0] if ops else None
        meta = getattr(first, "meta", None)
        meta = meta if isinstance(meta, EventMeta) else EventMeta()
        self.publish(
            LogRecord(
                kind="debug",
                timestamp=now_us(),
                connector_id=getattr(first, "connector_id", None),
                ip=meta.ip,
                identity=getattr(first, "identity", None),
                connection_id=meta.connection_id,
                protocol=meta.protocol,
                event="store_write_failed",
                reason=reason,
                detail=f"{names}: {error.message}",
            )
        )

    @asynccontextmanager
    async def subscribe(self, filt: LogFilter) -> AsyncIterator[Subscription]:
        sub = Subscription(filt, self._buffer)
        self._subs.add(sub)
        if len(self._subs) == 1:
            self._bus.want_logs(True)
        try:
            yield sub
        finally:
            self._forget(sub)
            sub.send.close()
            sub.receive.close()


def _short(payload: object, limit: int = 512) -> str:
    import msgspec

    text = msgspec.json.encode(payload).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
