"""The counters and gauges behind ``GET /metrics``, as plain data.

:class:`Metrics` is a bag of plain counters and gauges that the protocol layers increment
in the Trio thread (no locks: every update is a single dict operation on the event loop).
The composition root creates one instance and hands it to the front door and the services
(``services.metrics``).  In a node every process has its own, and the management process
sums them from the bus's snapshots (gateway/bus/api.py); the exposition text is written by
``prometheus_client`` over that sum (gateway/mgmt/exporter.py), not by this module.

This module is a leaf: it imports nothing of the gateway (nor prometheus_client), so every
layer may use it, the store's writer thread included (:data:`COMMIT_SECONDS_BOUNDS`).

Counters never go down; a label set appears the first time it is incremented.  A label set
of a connector that no longer exists is dropped (:meth:`Metrics.retain_connectors`), and a
connection gauge's label set goes when it is back to zero, so a node that creates and
deletes connectors all day does not grow a series per connector it ever had.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Literal, NamedTuple

__all__ = [
    "BATCH_SIZE_BOUNDS",
    "COMMIT_SECONDS_BOUNDS",
    "FAMILIES",
    "ConnectorCounts",
    "Histogram",
    "Labels",
    "Metrics",
    "Sample",
    "bucket_index",
    "packet_key",
    "write_key",
]

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

    __slots__ = (
        "connections",
        "connector_refused",
        "handshakes",
        "packets",
        "password_cache",
        "password_cache_entries",
        "refused",
        "writes",
    )

    def __init__(self) -> None:
        self.connections: defaultdict[Labels, int] = defaultdict(int)
        self.handshakes: defaultdict[Labels, int] = defaultdict(int)
        self.packets: defaultdict[Labels, int] = defaultdict(int)
        self.writes: defaultdict[Labels, int] = defaultdict(int)
        self.refused: defaultdict[Labels, int] = defaultdict(int)
        # refusals attributed to a connector, by reason (the console's live counters)
        self.connector_refused: defaultdict[Labels, int] = defaultdict(int)
        # password checks answered by a remembered proof (``hit``) or by scrypt (``miss``),
        # and the proofs held (a gauge with no labels): gateway/services/devices/passwords.py
        self.password_cache: defaultdict[Labels, int] = defaultdict(int)
        self.password_cache_entries: defaultdict[Labels, int] = defaultdict(int)

    def connection_opened(self, protocol: str, connector_id: str | None) -> Labels:
        """Count an open connection; returns the key to pass to :meth:`connection_closed`."""
        key = write_key(protocol, connector_id)
        self.connections[key] += 1
        return key

    def connection_closed(self, key: Labels) -> None:
        n = self.connections[key] - 1
        if n:
            self.connections[key] = n
        else:  # back to zero: the label set goes (a deleted connector leaves nothing)
            del self.connections[key]

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
        ``protocol`` is the layer that refused: ``proxy`` (the PROXY protocol header, before
        TLS), ``tls`` (the front door, before any protocol), ``mqtt`` or ``http``."""
        self.refused[_labels(protocol=protocol, reason=reason)] += 1

    def connector_refusal(self, connector_id: str, reason: str) -> None:
        """A refusal whose connector is known (from its debug-log record)."""
        self.connector_refused[_labels(connector=connector_id, reason=reason)] += 1

    def retain_connectors(self, live: Collection[str]) -> None:
        """Drop the counters' label sets of connectors not in ``live`` (deleted ones).  The
        connection gauge is left alone: its label sets go when they are back to zero, and
        a deleted connector's sessions are being closed.  O(label sets); called per scrape
        and per snapshot, off the hot path."""
        for family in (self.writes, self.connector_refused):
            gone = [k for k in family if (c := dict(k).get("connector")) and c not in live]
            for k in gone:
                del family[k]

    def connector_counts(self, connector_id: str) -> ConnectorCounts:
        """This connector's share of the counters: open connections and values written by
        protocol, refusals by reason.  O(label sets); for the management API's stats."""
        conns: dict[str, int] = {}
        writes: dict[str, int] = {}
        refused: dict[str, int] = {}
        for family, out, key in (
            (self.connections, conns, "protocol"),
            (self.writes, writes, "protocol"),
            (self.connector_refused, refused, "reason"),
        ):
            for labels, n in list(family.items()):
                d = dict(labels)
                if d.get("connector") == connector_id and n:
                    out[d[key]] = out.get(d[key], 0) + n
        return ConnectorCounts(conns, writes, refused)


class ConnectorCounts(NamedTuple):
    """One connector's share of :class:`Metrics` (see :meth:`Metrics.connector_counts`)."""

    connections: dict[str, int]  # open device connections by protocol
    writes: dict[str, int]  # values written by devices, by protocol
    refused: dict[str, int]  # refusals by reason


class Sample(NamedTuple):
    """One unlabelled value: its metric name, type, help line and value."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float


FAMILIES: dict[str, tuple[str, Literal["counter", "gauge"], str]] = {
    "connections": ("gateway_connections", "gauge", "Open device connections."),
    "handshakes": ("gateway_handshakes_total", "counter", "TLS handshakes by outcome."),
    "packets": ("gateway_packets_total", "counter", "Device packets/requests."),
    "writes": ("gateway_writes_total", "counter", "Resource values written by devices."),
    "refused": ("gateway_refused_total", "counter", "Refusals by reason."),
    "connector_refused": (
        "gateway_connector_refused_total",
        "counter",
        "Refusals attributed to a connector, by reason.",
    ),
    "password_cache": (
        "gateway_password_cache_total",
        "counter",
        "Device password checks: hit = a remembered proof, miss = scrypt.",
    ),
    "password_cache_entries": (
        "gateway_password_cache_entries",
        "gauge",
        "Verified-password proofs held in memory.",
    ),
}
"""Each :class:`Metrics` family by attribute: its metric name, type and help line."""

# Upper bounds (le) of the store's commit histograms: a commit takes from ~100 µs (one
# small submission, synchronous=NORMAL) to a second or more (a large import, a slow disk);
# a group holds 1 to MAX_BATCH submissions.
COMMIT_SECONDS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


def bucket_index(bounds: Sequence[float], value: float) -> int:
    """The bucket of ``value``: the first bound at or above it, ``len(bounds)`` for +Inf
    (counts are kept per bucket, cumulated only when exported)."""
    return bisect_left(bounds, value)


class Histogram(NamedTuple):
    """A histogram kept outside prometheus_client (the store's writer thread keeps plain
    per-bucket counts): ``counts[i]`` observations in bucket ``i`` of ``bounds`` (one more
    for +Inf), their sum."""

    name: str
    help: str
    bounds: Sequence[float]
    counts: Sequence[int]
    sum: float
