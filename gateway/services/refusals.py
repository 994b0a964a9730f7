"""Refusals as durable events: the forensic timeline of docs/protocol.md §6.5.

Every refusal the protocol layers report to the debug log (docs/protocol.md §9) whose
connector is known becomes one event in that connector's log, typed by what was refused and
carrying the stable reason code of §12 item 24:

=====================  ===================================================================
``connection_refused``  the TLS front door (``connection_refused``) or an MQTT CONNECT
                        (``connect_refused``)
``activation_refused``  MQTT ``$provision`` (``provision_refused``) or HTTP
                        ``POST /provision/activate``
``write_refused``       an MQTT publish (``write_rejected``) or an HTTP write or upload
``request_refused``     any other HTTP request (a read, a download, an unknown route)
=====================  ===================================================================

A refusal before the connector is known (no SNI, an unknown name) stays in the debug log and
the gateway-wide metrics: there is no connector log to put it in.

Refusals are cheap to provoke, and the event log keeps a fixed number of events per
connector, so a flood of them must not push the real history out.  Per (connector, type,
reason, address) at most :data:`REFUSAL_BURST` events are recorded in any window of
:data:`REFUSAL_EVENT_INTERVAL_US`; the first one recorded after a window with refusals left
out carries ``"suppressed": n``.  A device retrying with a bad credential every few seconds
is recorded every time; a flood's tail after its last recorded event is counted only by the
metrics (``gateway_connector_refused_total``).  The clock is the records' own timestamps.
"""

from __future__ import annotations

import re

from gateway.model import LogRecord
from gateway.store.api import AppendEvent, EventMeta

__all__ = [
    "REFUSAL_BURST",
    "REFUSAL_EVENTS",
    "REFUSAL_EVENT_INTERVAL_US",
    "RefusalEvents",
    "refusal_type",
]

REFUSAL_EVENT_INTERVAL_US = 1_000_000  # per connector, type, reason and peer address...
REFUSAL_BURST = 5  # ... at most this many events
MAX_TRACKED = 10_000  # (connector, type, reason, address) keys remembered for rate limiting

# Debug-log events that record a refusal, and the durable type each becomes (HTTP's by path).
REFUSAL_EVENTS = {
    "connection_refused": "connection_refused",
    "connect_refused": "connection_refused",
    "provision_refused": "activation_refused",
    "write_rejected": "write_refused",
    "http_refused": "request_refused",
}
# The HTTP device API's write and upload routes (docs/http-device-api.md).
_HTTP_WRITES = ("/onep:v1/stack/alias", "/onep:v1/stack/record", "/provision/upload")
_HTTP_LINE = re.compile(r"^([A-Z]+) (\S+) -> ")  # the detail of an http_refused record

Key = tuple[str, str, str, str | None]


def refusal_type(rec: LogRecord) -> str | None:
    """The durable event type of a debug record, or None when it is no refusal."""
    kind = REFUSAL_EVENTS.get(rec.event)
    if kind != "request_refused":
        return kind
    m = _HTTP_LINE.match(rec.detail or "")
    if m is None:
        return kind
    method, path = m.groups()
    if path == "/provision/activate":
        return "activation_refused"
    if method in ("POST", "PUT") and path.startswith(_HTTP_WRITES):
        return "write_refused"
    return kind


class RefusalEvents:
    """Turns refusal records into events, rate-limited per key.  Trio thread only."""

    __slots__ = ("_windows", "burst", "interval_us")

    def __init__(
        self, *, interval_us: int = REFUSAL_EVENT_INTERVAL_US, burst: int = REFUSAL_BURST
    ) -> None:
        self.interval_us = interval_us
        self.burst = burst
        # key -> [µs the window opened, events recorded in it, refusals left out since]
        self._windows: dict[Key, list[int]] = {}

    def event_for(self, rec: LogRecord) -> AppendEvent | None:
        """The event to append for ``rec``: None when it is no refusal, has no connector,
        or its key already had ``burst`` events in the current window (then it is counted
        in the next recorded event's ``suppressed``)."""
        kind = refusal_type(rec)
        if kind is None or rec.connector_id is None:
            return None
        key = (rec.connector_id, kind, rec.reason or "", rec.ip)
        now = rec.timestamp
        window = self._windows.get(key)
        suppressed = 0
        if window is None or now - window[0] >= self.interval_us:
            if window is None and len(self._windows) >= MAX_TRACKED:
                self._forget_before(now - self.interval_us)
            suppressed = window[2] if window is not None else 0
            self._windows[key] = [now, 1, 0]
        elif window[1] < self.burst:
            window[1] += 1
        else:
            window[2] += 1
            return None
        payload: dict[str, object] = {"event": rec.event, "detail": rec.detail}
        if suppressed:
            payload["suppressed"] = suppressed
        return AppendEvent(
            rec.connector_id,
            kind,
            rec.identity,
            EventMeta(rec.connection_id, rec.ip, rec.protocol),
            now,
            payload,
            reason=rec.reason,
        )

    def _forget_before(self, cutoff: int) -> None:
        """Drop keys whose window opened before ``cutoff`` (their left-out counts go with
        them; the metrics have them)."""
        for key in [k for k, v in self._windows.items() if v[0] < cutoff]:
            del self._windows[key]
        if len(self._windows) >= MAX_TRACKED:  # a flood of distinct keys: start over
            self._windows.clear()
