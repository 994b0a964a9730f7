"""Process metrics in the Prometheus text exposition format (``GET /metrics``).

:class:`Metrics` is a bag of plain counters and gauges that the protocol layers increment
in the Trio thread (no locks: every update is a single dict operation on the event loop).
The composition root creates one instance and hands it to the front door and the services
(``services.metrics``).  :func:`render` writes those families followed by single-value
:class:`Sample` s that the caller gathers from elsewhere (the store's counters, MQTT
sessions, live-log subscribers...: :meth:`gateway.services.bundle.Services.samples`).

This module is a leaf: it imports nothing of the gateway, so every layer may use it.

Counters never go down; a label set appears the first time it is incremented.  Label
values are escaped as the exposition format requires (backslash, quote, newline).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

__all__ = [
    "CONTENT_TYPE",
    "ConnectorCounts",
    "Metrics",
    "Sample",
    "packet_key",
    "render",
    "render_counters",
    "render_family",
    "write_key",
]

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
        ``protocol`` is the layer that refused: ``proxy`` (the PROXY protocol header, before
        TLS), ``tls`` (the front door, before any protocol), ``mqtt`` or ``http``."""
        self.refused[_labels(protocol=protocol, reason=reason)] += 1

    def connector_refusal(self, connector_id: str, reason: str) -> None:
        """A refusal whose connector is known (from its debug-log record)."""
        self.connector_refused[_labels(connector=connector_id, reason=reason)] += 1

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
    w.family(
        "gateway_connector_refused_total",
        "counter",
        "Refusals attributed to a connector, by reason.",
        sorted(m.connector_refused.items()),
    )
    w.family(
        "gateway_password_cache_total",
        "counter",
        "Device password checks: hit = a remembered proof, miss = scrypt.",
        sorted(m.password_cache.items()),
    )
    w.family(
        "gateway_password_cache_entries",
        "gauge",
        "Verified-password proofs held in memory.",
        sorted(m.password_cache_entries.items()),
    )


def render_counters(m: Metrics) -> str:
    """The exposition text of ``m``'s families alone (what :func:`render` starts with)."""
    w = _Writer()
    _families(w, m)
    return "\n".join(w.lines) + "\n"


def render_family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> str:
    """One family computed at scrape time by a layer this module does not import (the TLS
    certificates' expiry), in the same exposition format as :func:`render`."""
    w = _Writer()
    w.family(name, kind, help_text, [(_labels(**labels), value) for labels, value in samples])
    return "\n".join(w.lines) + "\n"


def render(m: Metrics, samples: Iterable[Sample]) -> str:
    """The whole exposition text: ``m``'s families, then ``samples``.  Reads counters
    without locking: they are ints written by the Trio thread (or monotonic counters of the
    store's writer thread), so a torn read can only be slightly stale."""
    w = _Writer()
    _families(w, m)
    for s in samples:
        w.one(s.name, s.kind, s.help, s.value)
    return "\n".join(w.lines) + "\n"
