"""The catalogue of malformed MQTT input: raw bytes, and how the gateway must end each.

Bytes are built by hand (:mod:`gateway.testing.mqtt_bytes` and literals here), never by the
gateway's codec, so a case can fail.  Each :class:`MqttCase` says

* ``stage``: ``"first"`` — the bytes are the first thing on the connection;
  ``"anonymous"`` — they follow an anonymous CONNECT already answered with CONNACK 0 (a
  provisioning-only session, docs/protocol.md §3.2), so the decoder is past the CONNECT;
* ``end``: ``"wait"`` — the gateway must close the connection by itself, at once;
  ``"eof"`` — the client ends its side after the bytes (a truncated packet at EOF);
* ``reply``: the bytes the gateway must send before closing (a refusing CONNACK), or none;
* ``reason``: the ``reason`` of the connection's ``disconnect`` debug record
  (docs/protocol.md §12 item 24 and the codec's violation reasons); over TLS a client that
  went away is ``ssl_closed`` instead of ``peer_closed``.

The spec clause each case breaks is in ``clause``.  :func:`cases` builds the list; the
token-dependent cases need a wrong token only, so the catalogue is the same for every run.
"""

from __future__ import annotations

import struct

import msgspec

from gateway.testing import mqtt_bytes as mb

__all__ = ["MAX_PACKET_SIZE", "MqttCase", "cases"]

# The per-connector maximum packet size of a connector with default limits
# (``limits.max_packet_size``: 1 MiB of value plus 4 KiB); probes read the real one.
MAX_PACKET_SIZE = 1_048_576 + 4096

MALFORMED = "malformed_packet"
PROTOCOL = "protocol_error"
TOO_LARGE = "packet_too_large"
UNSUPPORTED = "unsupported_protocol_version"
QOS2 = "qos2_not_supported"
PEER_CLOSED = "peer_closed"
NOT_AUTHENTICATED = "not_authenticated"
CONNACK_1 = mb.gen_connack(1)  # unacceptable protocol version (MQTT-3.1.2-2)
CONNACK_4 = mb.gen_connack(4)  # bad user name or password


class MqttCase(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    data: bytes
    reason: str
    stage: str = "first"
    end: str = "wait"
    reply: bytes = b""
    clause: str = ""


def _connect_body(
    *,
    proto: bytes = b"\x00\x04MQTT",
    level: int = 4,
    flags: int = 0x02,
    keepalive: bytes = b"\x00\x3c",
    payload: bytes = b"\x00\x01c",
) -> bytes:
    return proto + bytes((level, flags)) + keepalive + payload


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + mb.pack_remaining_length(len(body)) + body


def _connect(**fields: object) -> bytes:
    return _packet(0x10, _connect_body(**fields))  # type: ignore[arg-type]


def _raw_str(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


def _publish(topic: bytes, payload: bytes = b"x", *, qos: int = 0, mid: int = 1) -> bytes:
    body = _raw_str(topic) + (struct.pack("!H", mid) if qos else b"") + payload
    return _packet(0x30 | (qos << 1), body)


def _first(max_packet_size: int) -> list[MqttCase]:
    """Fixed headers and packets before CONNECT (MQTT-3.1.0-1, §2.2)."""
    c = MqttCase
    return [
        c(name="reserved type 0", data=b"\x00\x00", reason=MALFORMED, clause="§2.2.1"),
        c(name="reserved type 15", data=b"\xf0\x00", reason=MALFORMED, clause="§2.2.1"),
        c(name="CONNACK from a client", data=mb.gen_connack(0), reason=MALFORMED, clause="§3.2"),
        c(name="SUBACK from a client", data=b"\x90\x03\x00\x01\x00", reason=MALFORMED),
        c(name="UNSUBACK from a client", data=b"\xb0\x02\x00\x01", reason=MALFORMED),
        c(name="PINGRESP from a client", data=b"\xd0\x00", reason=MALFORMED),
        c(
            name="PUBLISH before CONNECT",
            data=mb.gen_publish("$resource/data_in", b"1", qos=1, mid=1),
            reason=PROTOCOL,
            clause="MQTT-3.1.0-1",
        ),
        c(name="PINGREQ before CONNECT", data=mb.gen_pingreq(), reason=PROTOCOL),
        c(name="SUBSCRIBE before CONNECT", data=mb.gen_subscribe(1, [("a", 0)]), reason=PROTOCOL),
        c(name="DISCONNECT before CONNECT", data=mb.gen_disconnect(), reason=PROTOCOL),
        c(name="PUBACK before CONNECT", data=mb.gen_puback(1), reason=PROTOCOL),
        c(
            name="CONNECT with fixed-header flags 0x1",
            data=b"\x11" + _connect()[1:],
            reason=MALFORMED,
            clause="MQTT-2.2.2-2",
        ),
        c(
            name="CONNECT with fixed-header flags 0xf",
            data=b"\x1f" + _connect()[1:],
            reason=MALFORMED,
        ),
        c(
            name="remaining length of five bytes",
            data=b"\x10\xff\xff\xff\xff\x7f",
            reason=MALFORMED,
            clause="§2.2.3",
        ),
        c(
            name="remaining length at the MQTT maximum (256 MB)",
            data=b"\x10\xff\xff\xff\x7f",
            reason=TOO_LARGE,
        ),
        c(
            name="CONNECT one byte over the maximum packet size",
            data=b"\x10" + mb.pack_remaining_length(max_packet_size - 3),
            reason=TOO_LARGE,
        ),
        c(
            name="an HTTP request on the MQTT port",
            data=b"GET / HTTP/1.1\r\n\r\n",
            reason=MALFORMED,
        ),
        c(
            name="a TLS ClientHello on the plain port",
            data=bytes.fromhex("16030100a1010000"),
            reason=MALFORMED,
        ),
        c(name="zero bytes", data=b"\x00" * 16, reason=MALFORMED),
    ]


def _connects() -> list[MqttCase]:
    """CONNECT variable header and payload (§3.1)."""
    c = MqttCase
    return [
        c(
            name="protocol name MQTX",
            data=_connect(proto=b"\x00\x04MQTX"),
            reason=UNSUPPORTED,
            reply=CONNACK_1,
            clause="MQTT-3.1.2-1",
        ),
        c(name="MQTT level 3", data=_connect(level=3), reason=UNSUPPORTED, reply=CONNACK_1),
        c(
            name="MQTT 5 (level 5)",
            data=_connect(level=5, payload=b"\x00\x00\x01c"),
            reason=UNSUPPORTED,
            reply=CONNACK_1,
            clause="MQTT-3.1.2-2",
        ),
        c(
            name="MQIsdp with level 4",
            data=_connect(proto=b"\x00\x06MQIsdp"),
            reason=UNSUPPORTED,
            reply=CONNACK_1,
        ),
        c(name="protocol level 0", data=_connect(level=0), reason=UNSUPPORTED, reply=CONNACK_1),
        c(
            name="empty protocol name",
            data=_connect(proto=b"\x00\x00"),
            reason=UNSUPPORTED,
            reply=CONNACK_1,
        ),
        c(
            name="protocol name not UTF-8",
            data=_connect(proto=b"\x00\x04\xff\xfeTT"),
            reason=MALFORMED,
            clause="MQTT-1.5.3-1",
        ),
        c(
            name="protocol name with U+0000",
            data=_connect(proto=b"\x00\x04MQ\x00T"),
            reason=MALFORMED,
            clause="MQTT-1.5.3-2",
        ),
        c(
            name="protocol name longer than the packet",
            data=_packet(0x10, b"\x00\x40MQTT\x04\x02"),
            reason=MALFORMED,
        ),
        c(
            name="reserved connect flag",
            data=_connect(flags=0x03),
            reason=MALFORMED,
            clause="MQTT-3.1.2-3",
        ),
        c(
            name="will QoS 3",
            data=_connect(flags=0x1E, payload=b"\x00\x01c\x00\x01w\x00\x00"),
            reason=MALFORMED,
            clause="MQTT-3.1.2-14",
        ),
        c(
            name="will QoS without the will flag",
            data=_connect(flags=0x0A),
            reason=MALFORMED,
            clause="MQTT-3.1.2-13",
        ),
        c(
            name="will retain without the will flag",
            data=_connect(flags=0x22),
            reason=MALFORMED,
            clause="MQTT-3.1.2-15",
        ),
        c(
            name="password flag without user name flag",
            data=_connect(flags=0x42, payload=b"\x00\x01c\x00\x02pw"),
            reason=MALFORMED,
            clause="MQTT-3.1.2-22",
        ),
        c(
            name="will flag without will topic",
            data=_connect(flags=0x06),
            reason=MALFORMED,
            clause="MQTT-3.1.3-2",
        ),
        c(
            name="will topic with a wildcard",
            data=_connect(flags=0x06, payload=b"\x00\x01c\x00\x03a/#\x00\x00"),
            reason=MALFORMED,
            clause="MQTT-3.3.2-2",
        ),
        c(
            name="empty will topic",
            data=_connect(flags=0x06, payload=b"\x00\x01c\x00\x00\x00\x00"),
            reason=MALFORMED,
            clause="MQTT-4.7.3-1",
        ),
        c(
            name="client id not UTF-8",
            data=_connect(payload=b"\x00\x02\xc3\x28"),
            reason=MALFORMED,
            clause="MQTT-1.5.3-1",
        ),
        c(
            name="client id with U+0000",
            data=_connect(payload=b"\x00\x03a\x00b"),
            reason=MALFORMED,
            clause="MQTT-1.5.3-2",
        ),
        c(
            name="client id with an encoded surrogate",
            data=_connect(payload=b"\x00\x03\xed\xa0\x80"),
            reason=MALFORMED,
            clause="MQTT-1.5.3-1",
        ),
        c(
            name="client id with an overlong encoding",
            data=_connect(payload=b"\x00\x02\xc0\xaf"),
            reason=MALFORMED,
        ),
        c(
            name="user name not UTF-8",
            data=_connect(flags=0x82, payload=b"\x00\x01c\x00\x01\xff"),
            reason=MALFORMED,
        ),
        c(
            name="bytes after the last CONNECT field",
            data=_connect(payload=b"\x00\x01cXYZ"),
            reason=MALFORMED,
        ),
        c(
            name="CONNECT without keep alive",
            data=_packet(0x10, b"\x00\x04MQTT\x04\x02"),
            reason=MALFORMED,
        ),
        c(name="CONNECT with remaining length 0", data=b"\x10\x00", reason=MALFORMED),
        c(
            name="CONNECT without client id",
            data=_packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c"),
            reason=MALFORMED,
        ),
        c(
            name="a token that is no device's",
            data=mb.gen_connect("c", username="", password="0" * 40),
            reason=NOT_AUTHENTICATED,
            reply=CONNACK_4,
            clause="docs/protocol.md §3.1",
        ),
        c(
            name="a password that is not UTF-8",
            data=mb.gen_connect("c", username="x", password=b"\xff\xfe"),
            reason=NOT_AUTHENTICATED,
            reply=CONNACK_4,
        ),
        c(
            name="identity and password of nobody",
            data=mb.gen_connect("c", username="nobody-here", password="p" * 24),
            reason=NOT_AUTHENTICATED,
            reply=CONNACK_4,
        ),
    ]


def _after_connect(max_packet_size: int) -> list[MqttCase]:
    """Packets after an accepted (anonymous) CONNECT."""

    def c(**kw: object) -> MqttCase:
        return MqttCase(stage="anonymous", **kw)  # type: ignore[arg-type]

    return [
        c(
            name="a second CONNECT",
            data=mb.gen_connect("again"),
            reason=PROTOCOL,
            clause="MQTT-3.1.0-2",
        ),
        c(
            name="PUBLISH QoS 3",
            data=b"\x36" + _publish(b"t", qos=1)[1:],
            reason=MALFORMED,
            clause="MQTT-3.3.1-4",
        ),
        c(
            name="PUBLISH QoS 2",
            data=_publish(b"t", qos=2),
            reason=QOS2,
            clause="docs/protocol.md §3.1",
        ),
        c(name="PUBREC", data=mb.gen_pubrec(1), reason=QOS2),
        c(name="PUBREL", data=mb.gen_pubrel(1), reason=QOS2),
        c(name="PUBCOMP", data=mb.gen_pubcomp(1), reason=QOS2),
        c(
            name="PUBREL with flags 0",
            data=b"\x60\x02\x00\x01",
            reason=MALFORMED,
            clause="MQTT-3.6.1-1",
        ),
        c(
            name="PUBLISH topic with +",
            data=_publish(b"a/+/b"),
            reason=MALFORMED,
            clause="MQTT-3.3.2-2",
        ),
        c(name="PUBLISH topic with #", data=_publish(b"a/#"), reason=MALFORMED),
        c(
            name="PUBLISH with an empty topic",
            data=_publish(b""),
            reason=MALFORMED,
            clause="MQTT-4.7.3-1",
        ),
        c(name="PUBLISH topic not UTF-8", data=_publish(b"\xff\xfe"), reason=MALFORMED),
        c(name="PUBLISH topic with U+0000", data=_publish(b"a\x00b"), reason=MALFORMED),
        c(
            name="PUBLISH QoS 1 with packet id 0",
            data=_publish(b"t", qos=1, mid=0),
            reason=MALFORMED,
            clause="MQTT-2.3.1-1",
        ),
        c(
            name="PUBLISH QoS 1 without packet id",
            data=_packet(0x32, _raw_str(b"t")),
            reason=MALFORMED,
        ),
        c(
            name="PUBLISH topic longer than the packet",
            data=_packet(0x30, b"\x01\x00abc"),
            reason=MALFORMED,
        ),
        c(name="PUBACK of three bytes", data=b"\x40\x03\x00\x01\x00", reason=MALFORMED),
        c(name="PUBACK with packet id 0", data=b"\x40\x02\x00\x00", reason=MALFORMED),
        c(
            name="SUBSCRIBE with flags 0",
            data=b"\x80" + mb.gen_subscribe(1, [("a", 0)])[1:],
            reason=MALFORMED,
            clause="MQTT-3.8.1-1",
        ),
        c(
            name="SUBSCRIBE without filters",
            data=b"\x82\x02\x00\x01",
            reason=MALFORMED,
            clause="MQTT-3.8.3-3",
        ),
        c(
            name="SUBSCRIBE requesting QoS 3",
            data=mb.gen_subscribe(1, [("a", 3)]),
            reason=MALFORMED,
            clause="MQTT-3.8.3-4",
        ),
        c(
            name="SUBSCRIBE with # inside the filter",
            data=mb.gen_subscribe(1, [("a/#/b", 0)]),
            reason=MALFORMED,
            clause="MQTT-4.7.1-2",
        ),
        c(
            name="SUBSCRIBE with a+ in a level",
            data=mb.gen_subscribe(1, [("a+", 0)]),
            reason=MALFORMED,
        ),
        c(
            name="SUBSCRIBE with packet id 0",
            data=mb.gen_subscribe(0, [("a", 0)]),
            reason=MALFORMED,
        ),
        c(
            name="SUBSCRIBE with an empty filter",
            data=mb.gen_subscribe(1, [("", 0)]),
            reason=MALFORMED,
        ),
        c(
            name="UNSUBSCRIBE without filters",
            data=b"\xa2\x02\x00\x01",
            reason=MALFORMED,
            clause="MQTT-3.10.3-2",
        ),
        c(
            name="UNSUBSCRIBE with flags 0",
            data=b"\xa0" + mb.gen_unsubscribe(1, ["a"])[1:],
            reason=MALFORMED,
        ),
        c(name="PINGREQ with a body", data=b"\xc0\x01\x00", reason=MALFORMED),
        c(name="DISCONNECT with a body", data=b"\xe0\x01\x00", reason=MALFORMED),
        c(name="DISCONNECT with flags 1", data=b"\xe1\x00", reason=MALFORMED),
        c(
            name="PUBLISH one byte over the maximum packet size",
            data=b"\x30" + mb.pack_remaining_length(max_packet_size - 3),
            reason=TOO_LARGE,
        ),
        c(
            name="PUBLISH with a remaining length of five bytes",
            data=b"\x30\x80\x80\x80\x80\x01",
            reason=MALFORMED,
        ),
        c(
            name="resource write without credentials",
            data=mb.gen_publish("$resource/data_in", b"1", qos=1, mid=1),
            reason=NOT_AUTHENTICATED,
            clause="docs/protocol.md §3.2",
        ),
        c(
            name="custom topic without credentials",
            data=mb.gen_publish("any/topic", b"1"),
            reason=NOT_AUTHENTICATED,
        ),
        c(
            name="$provision/ without an identity",
            data=mb.gen_publish("$provision/", b"", qos=1, mid=1),
            reason="bad_request",
        ),
    ]


def _at_eof() -> list[MqttCase]:
    """Truncated packets, then the client closes its side."""
    c = MqttCase
    full = mb.gen_connect("truncated")
    return [
        c(name="EOF before any byte", data=b"", reason=PEER_CLOSED, end="eof"),
        c(name="EOF after the first byte", data=b"\x10", reason=PEER_CLOSED, end="eof"),
        c(name="EOF inside the remaining length", data=b"\x10\xff", reason=PEER_CLOSED, end="eof"),
        c(name="EOF inside CONNECT", data=full[:-3], reason=PEER_CLOSED, end="eof"),
        c(
            name="EOF inside PUBLISH",
            data=mb.gen_publish("a/b", b"payload")[:-2],
            reason=PEER_CLOSED,
            stage="anonymous",
            end="eof",
        ),
    ]


def cases(max_packet_size: int = MAX_PACKET_SIZE) -> list[MqttCase]:
    """Every case, in a fixed order, for a connector whose ``limits.max_packet_size`` is
    ``max_packet_size`` (above 16 KiB: the size cases assume a three-byte length)."""
    if not 16384 < max_packet_size <= 2_097_152:
        raise ValueError("the size cases assume a maximum packet size in 16 KiB..2 MiB")
    return [*_first(max_packet_size), *_connects(), *_after_connect(max_packet_size), *_at_eof()]
