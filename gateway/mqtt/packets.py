"""MQTT 3.1.1 packet values, shared by both codec twins.

The decoder twins (``ext/mqtt_codec.pyx`` and ``gateway/_pure/mqtt_codec.py``) both build
these very classes, so a differential test can compare their output with ``==``.  Each
packet is a frozen msgspec Struct named after the spec (OASIS MQTT 3.1.1 §3); the
``gc=False`` flag is safe because a packet never refers back to anything that refers to it.

Only the packets a *client* sends are decoded, so only they have a Struct here; the packets
the gateway sends (CONNACK, SUBACK, UNSUBACK, PINGRESP, and PUBLISH/PUBACK... in the other
direction) are produced by the ``encode_*`` functions straight into bytes.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, TypeAlias

import msgspec

__all__ = [
    "DISCONNECT",
    "NEED_DATA",
    "PINGREQ",
    "Connect",
    "Disconnect",
    "Packet",
    "PacketType",
    "PingReq",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "QoS",
    "Subscribe",
    "Unsubscribe",
]


class NEED_DATA:  # a sentinel class, compared with ``is`` (h11's convention)
    """Returned by ``Decoder.next_event()`` when the buffer holds no complete packet.

    "Need more bytes" is the common case on a stream, so it is a return value and never an
    exception (one error tree: gateway/errors.py).  Both codec twins return this same class object.
    """

    def __init__(self) -> None:  # pragma: no cover - never instantiated
        raise TypeError("NEED_DATA is a sentinel; compare with `is`")


class PacketType(IntEnum):
    """Control packet types (MQTT 3.1.1 table 2.1), the high nibble of the first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class QoS(IntEnum):
    """Quality of service levels (MQTT 3.1.1 §4.3)."""

    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1
    EXACTLY_ONCE = 2


class Connect(msgspec.Struct, frozen=True, gc=False):
    """CONNECT (§3.1).  ``protocol_level`` is 4 (MQTT 3.1.1) or 3 (MQIsdp 3.1).

    ``username``/``password``/``will_*`` are ``None`` when their flag is clear; an empty
    username sent with its flag set is ``""`` (murano-client does that, docs/protocol.md §3.1).
    """

    client_id: str
    username: str | None
    password: bytes | None
    keepalive: int  # seconds, 0 = disabled
    clean_session: bool
    protocol_level: int
    will_topic: str | None
    will_payload: bytes | None
    will_qos: int
    will_retain: bool


class Publish(msgspec.Struct, frozen=True, gc=False):
    """PUBLISH (§3.3).  ``packet_id`` is 0 for QoS 0 (it is absent on the wire)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int


class PubAck(msgspec.Struct, frozen=True, gc=False):
    """PUBACK (§3.4)."""

    packet_id: int


class PubRec(msgspec.Struct, frozen=True, gc=False):
    """PUBREC (§3.5)."""

    packet_id: int


class PubRel(msgspec.Struct, frozen=True, gc=False):
    """PUBREL (§3.6)."""

    packet_id: int


class PubComp(msgspec.Struct, frozen=True, gc=False):
    """PUBCOMP (§3.7)."""

    packet_id: int


class Subscribe(msgspec.Struct, frozen=True, gc=False):
    """SUBSCRIBE (§3.8): ``topics`` is a non-empty list of (filter, requested QoS)."""

    packet_id: int
    topics: list[tuple[str, int]]


class Unsubscribe(msgspec.Struct, frozen=True, gc=False):
    """UNSUBSCRIBE (§3.10): ``topics`` is a non-empty list of filters."""

    packet_id: int
    topics: list[str]


class PingReq(msgspec.Struct, frozen=True, gc=False):
    """PINGREQ (§3.12)."""


class Disconnect(msgspec.Struct, frozen=True, gc=False):
    """DISCONNECT (§3.14)."""


Packet: TypeAlias = (
    Connect
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | Unsubscribe
    | PingReq
    | Disconnect
)
"""Every packet a client may send, i.e. everything the decoder can return."""

# The field-less packets are immutable, so the decoders hand out these two instances.
PINGREQ: Final = PingReq()
DISCONNECT: Final = Disconnect()
