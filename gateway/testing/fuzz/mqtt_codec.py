"""Fuzz target: the MQTT codec, compiled and pure twins side by side.

Input: one control byte, then the bytes a client sends.  The control byte picks the
maximum packet size (64..4096), whether a valid CONNECT goes first (so the bytes reach the
post-CONNECT decoder) and whether the input is fed in 1-, 5- or 64-byte chunks.

Invariants:

* both twins return the same packets, the same error (class and message) and the same
  count of buffered bytes, fed in one chunk; fed in chunks, the same packets and error;
* the only exceptions are :class:`~gateway.errors.ProtocolViolation` subclasses;
* every decoded packet, encoded again (the gateway's encoders for what the server sends,
  the independent builders of :mod:`gateway.testing.mqtt_bytes` for the rest), decodes to
  the same packet in both twins, and both twins' encoders give the same bytes.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

from gateway._pure import mqtt_codec as pure
from gateway.errors import ProtocolViolation
from gateway.mqtt.packets import (
    Connect,
    Disconnect,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
)
from gateway.testing import mqtt_bytes as mb

__all__ = ["NAME", "check", "seeds"]

NAME = "mqtt_codec"
compiled: ModuleType = importlib.import_module("gateway._ext.mqtt_codec")
_CONNECT = mb.gen_connect("fuzz")
_CHUNKS = (0, 1, 5, 64)

Outcome = tuple[list[object], tuple[type, str] | None, int]


def _run(codec: ModuleType, chunks: Sequence[bytes], max_packet_size: int) -> Outcome:
    decoder = codec.Decoder(max_packet_size=max_packet_size)
    packets: list[object] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while batch := decoder.events():
                packets.extend(batch)
    except ProtocolViolation as exc:
        return packets, (type(exc), str(exc)), int(decoder.buffered_bytes)
    return packets, None, int(decoder.buffered_bytes)


def _encode(packet: object) -> bytes:
    """The packet as bytes again."""
    if isinstance(packet, Publish):
        args = (
            packet.topic,
            packet.payload,
            packet.qos,
            packet.packet_id,
            packet.retain,
            packet.dup,
        )
        raw: bytes = pure.encode_publish(*args)
        assert compiled.encode_publish(*args) == raw, "publish encoders differ"
        return raw
    if isinstance(packet, Connect):
        level = packet.protocol_level
        return mb.gen_connect(
            packet.client_id,
            clean_session=packet.clean_session,
            keepalive=packet.keepalive,
            username=packet.username,
            password=packet.password,
            will_topic=packet.will_topic,
            will_payload=packet.will_payload or b"",
            will_qos=packet.will_qos,
            will_retain=packet.will_retain,
            proto_name=b"MQTT" if level == 4 else b"MQIsdp",
            proto_ver=level,
        )
    if isinstance(packet, Subscribe):
        return mb.gen_subscribe(packet.packet_id, packet.topics)
    if isinstance(packet, Unsubscribe):
        return mb.gen_unsubscribe(packet.packet_id, packet.topics)
    for kind, name in (
        (PubAck, "puback"),
        (PubRec, "pubrec"),
        (PubRel, "pubrel"),
        (PubComp, "pubcomp"),
    ):
        if isinstance(packet, kind):
            pid = getattr(packet, "packet_id")  # noqa: B009 - four Struct types share it
            raw = getattr(pure, f"encode_{name}")(pid)
            assert getattr(compiled, f"encode_{name}")(pid) == raw, f"{name} encoders differ"
            return raw
    if isinstance(packet, PingReq):
        return mb.gen_pingreq()
    if isinstance(packet, Disconnect):
        return mb.gen_disconnect()
    raise AssertionError(f"decoded an unknown packet {packet!r}")


def check(data: bytes) -> None:
    if not data:
        return
    control, body = data[0], data[1:]
    max_size = 64 * (1 + (control & 0x3F))
    stream = (_CONNECT if control & 0x40 else b"") + body
    expected = _run(pure, [stream], max_size)
    assert _run(compiled, [stream], max_size) == expected, "twins differ"
    step = _CHUNKS[(control >> 6) & 0x03] if control & 0x80 else 0
    if step:
        chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
        assert _run(pure, chunks, max_size)[:2] == expected[:2], "chunking changed the result"
        assert _run(compiled, chunks, max_size)[:2] == expected[:2], "chunking changed the result"
    for i, packet in enumerate(expected[0]):
        raw = _encode(packet)
        alone = i == 0 and isinstance(packet, Connect)
        again = raw if alone else _CONNECT + raw
        for codec in (pure, compiled):
            packets, error, _ = _run(codec, [again], 1 << 20)
            assert error is None, f"re-encoded {packet!r} does not decode: {error}"
            assert len(packets) == (1 if alone else 2), f"re-encoded {packet!r}: {packets!r}"
            assert packets[-1] == packet, f"{packet!r} came back as {packets[-1]!r}"


def seeds() -> list[bytes]:
    """Valid streams of every client packet type, a few broken ones."""
    body = b"".join(
        [
            mb.gen_publish("$resource/data_in", b"21.5", qos=1, mid=7),
            mb.gen_publish("a/b", b"", retain=True),
            mb.gen_subscribe(2, [("$resource/#", 1), ("a/+/c", 0)]),
            mb.gen_unsubscribe(3, ["a/#"]),
            mb.gen_puback(4),
            mb.gen_pingreq(),
            mb.gen_disconnect(),
        ]
    )
    return [
        b"\x40" + body,
        b"\x00"
        + mb.gen_connect("c", username="u", password=b"p", will_topic="w", will_payload=b"x"),
        b"\x00" + mb.gen_connect("c", proto_name=b"MQIsdp", proto_ver=3),
        b"\xc0" + body,
        b"\x45" + mb.gen_publish("t", b"x" * 300),
        b"\x40" + b"\x30\xff\xff\xff\xff\x01",
        b"\x00" + b"\x10\x00",
    ]
