"""Hand-written MQTT 3.1.1 byte builders for tests, in the style of mosquitto's ``gen_*``.

These build packets with ``struct.pack`` straight from the spec's figures and share no code
with the gateway's codec, so a conformance test comparing the codec against them can fail
(expected bytes never come from the code under test).  ``mid`` is the packet
identifier, as in mosquitto's test suite.

Client-to-server: :func:`gen_connect`, :func:`gen_publish`, :func:`gen_puback`,
:func:`gen_pubrec`, :func:`gen_pubrel`, :func:`gen_pubcomp`, :func:`gen_subscribe`,
:func:`gen_unsubscribe`, :func:`gen_pingreq`, :func:`gen_disconnect`.
Server-to-client: :func:`gen_connack`, :func:`gen_suback`, :func:`gen_unsuback`,
:func:`gen_pingresp` (and publish/puback/pubrec/pubrel/pubcomp, which go both ways).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = [
    "gen_connack",
    "gen_connect",
    "gen_disconnect",
    "gen_pingreq",
    "gen_pingresp",
    "gen_puback",
    "gen_pubcomp",
    "gen_publish",
    "gen_pubrec",
    "gen_pubrel",
    "gen_suback",
    "gen_subscribe",
    "gen_unsuback",
    "gen_unsubscribe",
    "pack_remaining_length",
    "pack_string",
]


def pack_remaining_length(length: int) -> bytes:
    """The variable byte integer of MQTT 3.1.1 §2.2.3 (least significant 7 bits first)."""
    if not 0 <= length <= 268_435_455:
        raise ValueError("remaining length out of range")
    out = b""
    while True:
        digit = length % 128
        length //= 128
        if length > 0:
            digit |= 0x80
        out += struct.pack("!B", digit)
        if length == 0:
            return out


def pack_string(value: str | bytes) -> bytes:
    """A length-prefixed field (§1.5.3): str is UTF-8 encoded, bytes are taken as is."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return struct.pack("!B", first_byte) + pack_remaining_length(len(body)) + body


def gen_connect(
    client_id: str | bytes = "",
    *,
    clean_session: bool = True,
    keepalive: int = 60,
    username: str | bytes | None = None,
    password: bytes | str | None = None,
    will_topic: str | bytes | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
    proto_name: bytes = b"MQTT",
    proto_ver: int = 4,
    connect_flags: int | None = None,
    trailing: bytes = b"",
) -> bytes:
    """CONNECT (§3.1).  ``connect_flags`` overrides the computed flags byte (to build
    invalid combinations); ``trailing`` appends raw bytes inside the packet."""
    flags = 0
    if clean_session:
        flags |= 0x02
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3)
        if will_retain:
            flags |= 0x20
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    if connect_flags is not None:
        flags = connect_flags
    body = pack_string(proto_name) + struct.pack("!BBH", proto_ver, flags, keepalive)
    body += pack_string(client_id)
    if will_topic is not None:
        body += pack_string(will_topic) + pack_string(will_payload)
    if username is not None:
        body += pack_string(username)
    if password is not None:
        body += pack_string(password)
    return _packet(0x10, body + trailing)


def gen_connack(rc: int = 0, *, session_present: bool = False) -> bytes:
    """CONNACK (§3.2)."""
    return struct.pack("!BBBB", 0x20, 2, 1 if session_present else 0, rc)


def gen_publish(
    topic: str | bytes,
    payload: bytes | str = b"",
    *,
    qos: int = 0,
    mid: int = 0,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """PUBLISH (§3.3); the packet identifier is written only when ``qos`` > 0."""
    first = 0x30 | (qos << 1)
    if retain:
        first |= 0x01
    if dup:
        first |= 0x08
    body = pack_string(topic)
    if qos > 0:
        body += struct.pack("!H", mid)
    body += payload.encode("utf-8") if isinstance(payload, str) else payload
    return _packet(first, body)


def gen_puback(mid: int) -> bytes:
    """PUBACK (§3.4)."""
    return struct.pack("!BBH", 0x40, 2, mid)


def gen_pubrec(mid: int) -> bytes:
    """PUBREC (§3.5)."""
    return struct.pack("!BBH", 0x50, 2, mid)


def gen_pubrel(mid: int) -> bytes:
    """PUBREL (§3.6): flags 0b0010."""
    return struct.pack("!BBH", 0x62, 2, mid)


def gen_pubcomp(mid: int) -> bytes:
    """PUBCOMP (§3.7)."""
    return struct.pack("!BBH", 0x70, 2, mid)


def gen_subscribe(mid: int, topics: Sequence[tuple[str | bytes, int]]) -> bytes:
    """SUBSCRIBE (§3.8): flags 0b0010, then (filter, requested QoS) pairs."""
    body = struct.pack("!H", mid)
    for topic, qos in topics:
        body += pack_string(topic) + struct.pack("!B", qos)
    return _packet(0x82, body)


def gen_suback(mid: int, codes: Sequence[int]) -> bytes:
    """SUBACK (§3.9)."""
    return _packet(0x90, struct.pack("!H", mid) + bytes(codes))


def gen_unsubscribe(mid: int, topics: Sequence[str | bytes]) -> bytes:
    """UNSUBSCRIBE (§3.10): flags 0b0010."""
    body = struct.pack("!H", mid)
    for topic in topics:
        body += pack_string(topic)
    return _packet(0xA2, body)


def gen_unsuback(mid: int) -> bytes:
    """UNSUBACK (§3.11)."""
    return struct.pack("!BBH", 0xB0, 2, mid)


def gen_pingreq() -> bytes:
    """PINGREQ (§3.12)."""
    return struct.pack("!BB", 0xC0, 0)


def gen_pingresp() -> bytes:
    """PINGRESP (§3.13)."""
    return struct.pack("!BB", 0xD0, 0)


def gen_disconnect() -> bytes:
    """DISCONNECT (§3.14)."""
    return struct.pack("!BB", 0xE0, 0)
