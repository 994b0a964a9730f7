"""Typed values shared across layers (docs/architecture.md principle 5: Structs, not dicts).

Everything here is a frozen msgspec Struct or an enum; these are the nouns that travel from
the front door through the services to the store and back out to the logs.

The resource-write dispatch values (:class:`ResourceSpec` in; :class:`PointWrite` rows,
:class:`Rejection`, :class:`ProvisionRequest`, :class:`CustomPublish` out; and the
``$resource.batch`` decoder) are defined here once, for both twins of the dispatcher
(``ext/dispatch.pyx`` and ``gateway/_pure/dispatch.py``): each imports them from this
module, so neither twin depends on the other and both return objects of the very same
classes.  :class:`PointWrite` is also the store's row (``gateway/store/api.py`` re-exports
it): the dispatcher builds it once and the store writes it as it is, and it lives here
because sans-IO rules may not import the store.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "BATCH_DECODER",
    "BatchEntry",
    "CertClaim",
    "ConnectionInfo",
    "CustomPublish",
    "LogRecord",
    "PeerAddress",
    "PointWrite",
    "Protocol",
    "ProvisionRequest",
    "Rejection",
    "ResourceSpec",
    "Transport",
]


class Transport(StrEnum):
    """Which listener a connection arrived on."""

    TLS = "tls"  # multi-protocol TLS port (ALPN / first-byte switch), Murano's 443
    MQTT_TLS = "mqtt_tls"  # MQTT-only TLS port, 8883
    DEV_HTTP = "dev_http"  # plain HTTP, dev mode, connector by Host header
    DEV_MQTT = "dev_mqtt"  # plain MQTT, dev mode, default connector


class Protocol(StrEnum):
    """Event-log protocol names (docs/protocol.md §12 item 20)."""

    HTTP = "onep:v1/http"
    MQTT = "murano:v1/mqtt"
    C2C = "c2c"


class CertClaim(msgspec.Struct, frozen=True, gc=False):
    """What a TLS client certificate says about its holder, as the front door saw it.

    ``verified`` is True when the chain was checked against the connector's CA (and was
    valid), False when no CA is configured (the certificate must then be pinned by its
    ``fingerprint``, hex SHA-256 of the DER).  A certificate that fails CA verification never
    produces a claim: the front door refuses the connection.
    """

    cn: str
    fingerprint: str
    verified: bool
    pem: str = ""


class PeerAddress(msgspec.Struct, frozen=True, gc=False):
    """Where a device connection comes from and where it arrived: the one place a
    connection's addresses live (the front door resolves it before anything else, and
    every address-based feature — events, live logs, the IP whitelist, ``/ip`` — reads it).

    Without a proxy these are the socket's two ends.  Through a trusted proxy speaking the
    PROXY protocol (:mod:`gateway.frontdoor.proxy`) ``ip``/``port`` are the device's and
    ``server_ip``/``server_port`` the address the device connected to, as the header says;
    ``proxy`` is then the proxy's own address (the socket's peer), kept for the debug log.
    Addresses are normalised (:func:`gateway.addresses.normalize_ip`); ``""`` when unknown.
    """

    ip: str
    port: int = 0
    server_ip: str = ""
    server_port: int = 0
    proxy: str | None = None


class ConnectionInfo(msgspec.Struct, frozen=True, gc=False):
    """Per-connection facts, one Struct instead of nine positional arguments."""

    connection_id: str
    connector_id: str | None  # None: not known yet (plain HTTP before the Host header)
    peer: PeerAddress
    transport: Transport
    alpn: str | None = None
    server_name: str | None = None
    cert: CertClaim | None = None

    @property
    def tls(self) -> bool:
        return self.transport in (Transport.TLS, Transport.MQTT_TLS)

    @property
    def peer_ip(self) -> str:
        """The device's address (``peer.ip``)."""
        return self.peer.ip

    @property
    def peer_port(self) -> int:
        return self.peer.port


class LogRecord(msgspec.Struct, frozen=True, gc=False):
    """One live-log line (not persisted).  ``kind`` is ``events`` (mirrors the durable event
    log) or ``debug`` (connection-level diagnostics, including pre-authentication failures
    keyed only by ``ip``).  ``reason`` uses docs/protocol.md §12 item 24's vocabulary."""

    kind: str
    timestamp: int  # µs
    connector_id: str | None
    ip: str | None
    identity: str | None = None
    connection_id: str | None = None
    protocol: str | None = None
    event: str = ""
    reason: str | None = None
    detail: str | None = None
    proxy: str | None = None  # the proxy's address when the connection came through one


# -- resource-write dispatch (docs/protocol.md §3.2, §3.3, §4) --------------------------------


class ResourceSpec(msgspec.Struct, frozen=True, gc=False):
    """One resource definition of a connector (docs/protocol.md §4.1)."""

    alias: str
    format: str  # "string" | "number" | "boolean"
    allowed: tuple[str | float | int, ...] = ()
    settable: bool = False
    sync: bool = True


class PointWrite(msgspec.Struct, frozen=True, gc=False):
    """One value a device wrote, as the store writes it.  ``defined`` is False for aliases
    without a resource definition: those go to the event log only (docs/protocol.md §4.2);
    ``defined`` points update state.

    Built once, by the resource-write dispatcher (MQTT) or ``services/state.py`` (HTTP),
    and handed to the store unchanged inside a ``DataIn``.  ``settable`` copies the value
    into ``set`` too (§4.2) and clears a pending set value (§4.3).  ``replay_check`` is set
    for device-timestamped points (record, ``$resource.batch``): an identical point already
    stored is acknowledged and not stored again (§12 item 14).
    """

    alias: str
    value: str
    timestamp: int  # µs
    defined: bool = True
    settable: bool = False
    replay_check: bool = False


class Rejection(msgspec.Struct, frozen=True, gc=False):
    """A value that failed its resource's format or allowed list; ``reason`` says how."""

    alias: str
    value: str
    timestamp: int  # µs
    reason: str


class ProvisionRequest(msgspec.Struct, frozen=True, gc=False):
    """``$provision/<identity>``: payload empty (token), a password, or a certificate PEM."""

    identity: str
    payload: bytes


class CustomPublish(msgspec.Struct, frozen=True, gc=False):
    """A publish to any other topic: forwarded to the event log as a ``publish`` event."""

    topic: str
    payload: bytes


class BatchEntry(msgspec.Struct, frozen=True, gc=False):
    """One element of a ``$resource.batch`` array."""

    timestamp: int | float
    values: dict[str, Any]


BATCH_DECODER = msgspec.json.Decoder(list[BatchEntry])
"""Decodes a ``$resource.batch`` payload (shared by both dispatcher twins)."""
