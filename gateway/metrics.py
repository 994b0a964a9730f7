"""Process metrics in the Prometheus text exposition format (``GET /metrics``).

:class:`Metrics` is a bag of plain counters and gauges that the protocol layers increment
in the Trio thread (no locks: every update is a single dict operation on the event loop).
The composition root attaches one instance as ``services.metrics``; until a layer does so,
:func:`render` still reports what the services already count (store commits and batch
sizes, MQTT sessions, live-log subscribers, event-log size, pending set values, devices).

Counters never go down; a label set appears the first time it is incremented.  Label
values are escaped as the exposition format requires (backslash, quote, newline).
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.services.bundle import Services

__all__ = ["CONTENT_TYPE", "Metrics", "packet_key", "render", "render_counters", "write_key"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def _labels(**kw: str | None) -> Labels:
    return tuple((k, "" if v is None else str(v)) for k, v in sorted(kw.items()))


def packet_key(protocol: str, direction: str) -> Labels:
    """The label set of :attr:`Metrics.packets` (precompute it once per connection)."""
    return _labels(direction=direction, protocol=protocol)


def write_key(protocol: str, connector_id: str | None) -> Labels:
    """The label set of :attr:`Metrics.writes` and :attr:`Metrics.connections`."""
    return _labels(connector=connector_id, protocol=protocol)


class Metrics:
    """Counters and gauges other layers increment.  All methods are O(1) and never block.

    Contract: call only from the Trio thread (the front door, MQTT sessions, the device
    API).  ``connections`` is a gauge: pair every :meth:`connection_opened` with one
    :meth:`connection_closed` (in a ``finally``).

    Hot paths (one MQTT read, one HTTP request) should not build label tuples per call:
    they precompute keys with :func:`packet_key` / :func:`write_key` once (per connection
    or per module) and add to the families directly, e.g. ``m.packets[key] += n`` — one
    dict operation, no allocation.  The convenience methods below build the key each time
    and suit the colder paths (handshakes, refusals, connection open/close).
    """

    __slots__ = ("connections", "handshakes", "packets", "refused", "writes")

    def __init__(self) -> None:
        self.connections: defaultdict[Labels, int] = defaultdict(int)
        self.handshakes: defaultdict[Labels, int] = defaultdict(int)
        self.packets: defaultdict[Labels, int] = defaultdict(int)
        self.writes: defaultdict[Labels, int] = defaultdict(int)
        self.refused: defaultdict[Labels, int] = defaultdict(int)

    def connection_opened(self, protocol: str, connector_id: str | None) -> Labels:
        """Count an open connection; returns the key to pass to :meth:`connection_closed`."""
        key = write_key(protocol, connector_id)
        self.connections[key] += 1
        return key

    def connection_closed(self, key: Labels) -> None:
        self.connections[key] -= 1

    def handshake(self, outcome: str) -> None:
        """A TLS handshake finished: ``ok``, ``failed`` or ``timeout``."""
        self.handshakes[_labels(outcome=outcome)] += 1

    def packet(self, protocol: str, direction: str, n: int = 1) -> None:
        """MQTT packets or HTTP requests/responses, ``direction`` ``in`` or ``out``."""
        self.packets[packet_key(protocol, direction)] += n

    def write(self, protocol: str, connector_id: str | None, n: int = 1) -> None:
        """Resource values written by devices (counted after commit)."""
        self.writes[write_key(protocol, connector_id)] += n

    def refuse(self, protocol: str, reason: str) -> None:
        """A connection, CONNECT or request refused (docs/protocol.md §12 item 24 reasons).
        ``protocol`` is the layer that refused: ``tls`` (the front door, before any
        protocol), ``mqtt`` or ``http``."""
        self.refused[_labels(protocol=protocol, reason=reason)] += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _fmt_value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [((), value)])


def _counts(services: Services) -> tuple[int, int, int]:
    """Devices, events in the log, pending set values (one short read)."""

    def q(conn: sqlite3.Connection) -> tuple[int, int, int]:
        devices = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM state WHERE pending = 1").fetchone()[0]
        return int(devices), int(events), int(pending)

    return services.store.read(q)


def _families(w: _Writer, m: Metrics) -> None:
    w.family(
        "gateway_connections",
        "gauge",
        "Open device connections.",
        sorted(m.connections.items()),
    )
    w.family(
        "gateway_handshakes_total",
        "counter",
        "TLS handshakes by outcome.",
        sorted(m.handshakes.items()),
    )
    w.family(
        "gateway_packets_total",
        "counter",
        "Device packets/requests.",
        sorted(m.packets.items()),
    )
    w.family(
        "gateway_writes_total",
        "counter",
        "Resource values written by devices.",
        sorted(m.writes.items()),
    )
    w.family("gateway_refused_total", "counter", "Refusals by reason.", sorted(m.refused.items()))


def render_counters(m: Metrics) -> str:
    """The exposition text of ``m``'s families alone (what :func:`render` starts with)."""
    w = _Writer()
    _families(w, m)
    return "\n".join(w.lines) + "\n"


def render(services: Services) -> str:
    """The whole exposition text.  Reads counters without locking: they are monotonic ints
    written by one thread, so a torn read can only be slightly stale."""
    w = _Writer()
    m: Metrics | None = getattr(services, "metrics", None)
    if m is not None:
        _families(w, m)
    stats: Any = getattr(services.store, "stats", None)
    if stats is not None:
        w.one(
            "gateway_store_commits_total", "counter", "Store transactions committed.", stats.commits
        )
        w.one(
            "gateway_store_submissions_total",
            "counter",
            "Submissions committed.",
            stats.submissions,
        )
        w.one(
            "gateway_store_failed_submissions_total",
            "counter",
            "Submissions rolled back.",
            stats.failed_submissions,
        )
        w.one(
            "gateway_store_last_batch", "gauge", "Submissions in the last commit.", stats.last_batch
        )
        w.one("gateway_store_max_batch", "gauge", "Largest group commit so far.", stats.max_batch)
        w.one(
            "gateway_store_commit_seconds_total",
            "counter",
            "Time spent committing.",
            stats.commit_seconds_total,
        )
        w.one("gateway_store_events_total", "counter", "Events appended.", stats.events)
    w.one(
        "gateway_mqtt_sessions",
        "gauge",
        "MQTT sessions registered for control pushes.",
        services.control.session_count,
    )
    w.one(
        "gateway_log_records_total",
        "counter",
        "Live-log records published.",
        services.logs.published,
    )
    w.one(
        "gateway_log_subscribers", "gauge", "Live-log subscribers.", services.logs.subscriber_count
    )
    w.one(
        "gateway_log_dropped_subscribers_total",
        "counter",
        "Live-log subscribers dropped for being slow.",
        services.logs.dropped_subscribers,
    )
    devices, events, pending = _counts(services)
    w.one("gateway_devices", "gauge", "Device identities (all connectors).", devices)
    w.one("gateway_event_log_size", "gauge", "Events kept in the durable log.", events)
    w.one("gateway_pending_values", "gauge", "Set values not yet acknowledged.", pending)
    w.one("gateway_connectors", "gauge", "Connectors.", len(services.registry.all()))
    w.one(
        "gateway_uptime_seconds",
        "gauge",
        "Seconds since start.",
        round(time.time() - services.started, 3),
    )
    return "\n".join(w.lines) + "\n"
