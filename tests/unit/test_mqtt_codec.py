"""Conformance of both codec twins against hand-built bytes (``gateway.testing.mqtt_bytes``).

Each test names the MQTT 3.1.1 clause it checks.  Expected bytes come from the independent
builders, never from the encoder under test.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from gateway.errors import MalformedPacket, PacketTooLarge, ProtocolViolation, UnsupportedProtocol
from gateway.mqtt.packets import (
    NEED_DATA,
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

PURE_ONLY = os.environ.get("GATEWAY_PURE_PYTHON", "") not in ("", "0")


def _module(name: str) -> ModuleType:
    if name == "compiled" and PURE_ONLY:
        module: ModuleType = pytest.importorskip("gateway._ext.mqtt_codec")
        return module
    return importlib.import_module(
        "gateway._ext.mqtt_codec" if name == "compiled" else "gateway._pure.mqtt_codec"
    )


@pytest.fixture(params=["pure", "compiled"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    return _module(request.param)


CONNECT = mb.gen_connect("dev")


def decode(codec: ModuleType, data: bytes, **kwargs: int) -> list[object]:
    decoder = codec.Decoder(**kwargs)
    decoder.receive_data(data)
    out: list[object] = []
    while (packet := decoder.next_event()) is not NEED_DATA:
        out.append(packet)
    assert decoder.buffered_bytes == 0
    return out


def decode_one(codec: ModuleType, packet: bytes) -> object:
    """Decode ``packet`` on a connection whose CONNECT went first."""
    packets = decode(codec, CONNECT + packet)
    assert len(packets) == 2
    return packets[1]


def violation(codec: ModuleType, data: bytes, **kwargs: int) -> ProtocolViolation:
    decoder = codec.Decoder(**kwargs)
    decoder.receive_data(data)
    with pytest.raises(ProtocolViolation) as info:
        _drain(decoder)
    return info.value


def _drain(decoder: object) -> None:
    while decoder.events():  # type: ignore[attr-defined]
        pass


# --- CONNECT (§3.1) ---------------------------------------------------------------------------


def test_connect_anonymous_murano_provisioning(codec: ModuleType) -> None:
    """§3.1.3: murano-client's anonymous CONNECT: empty client id, empty user name flag set."""
    [packet] = decode(codec, mb.gen_connect("", username="", keepalive=300))
    assert packet == Connect("", "", None, 300, True, 4, None, None, 0, False)


def test_connect_token_and_will_all_flags(codec: ModuleType) -> None:
    """§3.1.2.3 connect flags: user name, password, will retain, will QoS 2, will, clean."""
    data = mb.gen_connect(
        "cid",
        username="",
        password=b"t" * 40,
        will_topic="w/t",
        will_payload=b"bye",
        will_qos=2,
        will_retain=True,
        keepalive=0,
    )
    [packet] = decode(codec, data)
    assert packet == Connect("cid", "", b"t" * 40, 0, True, 4, "w/t", b"bye", 2, True)


def test_connect_mqisdp_31_without_clean_session(codec: ModuleType) -> None:
    """MQTT 3.1 clients send protocol name "MQIsdp" and level 3."""
    [packet] = decode(
        codec, mb.gen_connect("x", clean_session=False, proto_name=b"MQIsdp", proto_ver=3)
    )
    assert isinstance(packet, Connect)
    assert (packet.protocol_level, packet.clean_session) == (3, False)


@pytest.mark.parametrize(
    ("name", "level"), [(b"MQTT", 5), (b"MQTT", 3), (b"MQIsdp", 4), (b"MQTX", 4)]
)
def test_connect_unsupported_protocol(codec: ModuleType, name: bytes, level: int) -> None:
    """MQTT-3.1.2-2: an unsupported protocol level is refused (the session answers CONNACK 1)."""
    exc = violation(codec, mb.gen_connect("", proto_name=name, proto_ver=level))
    assert type(exc) is UnsupportedProtocol
    assert f"level {level}" in str(exc)


@pytest.mark.parametrize(
    ("flags", "clause"),
    [
        (0x03, "MQTT-3.1.2-3"),  # reserved bit 0
        (0x1E, "MQTT-3.1.2-14"),  # will QoS 3
        (0x08, "MQTT-3.1.2-13"),  # will QoS 1 without will flag
        (0x22, "MQTT-3.1.2-13, -15"),  # will retain without will flag
        (0x42, "MQTT-3.1.2-22"),  # password without user name
    ],
)
def test_connect_flag_violations(codec: ModuleType, flags: int, clause: str) -> None:
    """§3.1.2.3: invalid connect-flag combinations are malformed."""
    exc = violation(codec, mb.gen_connect("", connect_flags=flags))
    assert type(exc) is MalformedPacket
    assert clause in str(exc)


def test_connect_trailing_bytes(codec: ModuleType) -> None:
    """§3.1.3: the payload holds exactly the fields the flags announce."""
    exc = violation(codec, mb.gen_connect("", trailing=b"xy"))
    assert type(exc) is MalformedPacket
    assert str(exc) == "CONNECT has 2 bytes after its last field"


def test_connect_field_runs_past_the_end(codec: ModuleType) -> None:
    """§1.5.3: a length prefix larger than what is left of the packet."""
    data = b"\x10\x0e" + mb.pack_string("MQTT") + b"\x04\x02\x00\x3c" + b"\x00\x09abc"
    exc = violation(codec, data)
    assert str(exc) == "CONNECT client identifier runs past the end of the packet"


def test_connect_client_id_not_utf8(codec: ModuleType) -> None:
    """MQTT-1.5.3-1: ill-formed UTF-8 closes the connection."""
    exc = violation(codec, mb.gen_connect(b"\xc3\x28"))
    assert str(exc) == "CONNECT client identifier is not valid UTF-8 (MQTT-1.5.3-1)"


def test_connect_client_id_with_nul(codec: ModuleType) -> None:
    """MQTT-1.5.3-2: U+0000 in a string closes the connection."""
    exc = violation(codec, mb.gen_connect("a\x00b"))
    assert str(exc) == "CONNECT client identifier contains U+0000 (MQTT-1.5.3-2)"


def test_connect_surrogate_is_not_utf8(codec: ModuleType) -> None:
    """MQTT-1.5.3-1: encoded surrogates (U+D800..U+DFFF) are ill-formed."""
    exc = violation(codec, mb.gen_connect(b"\xed\xa0\x80"))
    assert "not valid UTF-8" in str(exc)


def test_first_packet_must_be_connect(codec: ModuleType) -> None:
    """MQTT-3.1.0-1: the first packet from the client must be CONNECT."""
    exc = violation(codec, mb.gen_publish("t", b"x"))
    assert type(exc) is ProtocolViolation
    assert str(exc) == "the first packet must be CONNECT, got PUBLISH"


def test_second_connect_is_a_violation(codec: ModuleType) -> None:
    """MQTT-3.1.0-2: a second CONNECT is a protocol violation."""
    exc = violation(codec, CONNECT + CONNECT)
    assert type(exc) is ProtocolViolation
    assert "MQTT-3.1.0-2" in str(exc)


# --- fixed header (§2.2) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "first", [0x11, 0x18, 0x41, 0x52, 0x60, 0x63, 0x71, 0x80, 0x83, 0xA0, 0xC1, 0xE2]
)
def test_reserved_flags(codec: ModuleType, first: int) -> None:
    """MQTT-2.2.2-2 reserved flags: invalid flags close the connection; SUBSCRIBE,
    UNSUBSCRIBE and PUBREL must carry 0b0010 (MQTT-3.8.1-1, MQTT-3.10.1-1, MQTT-3.6.1-1)."""
    prefix = b"" if first >> 4 == 1 else CONNECT
    exc = violation(codec, prefix + bytes((first, 0)))
    assert type(exc) is MalformedPacket
    assert "MQTT-2.2.2-2" in str(exc)


@pytest.mark.parametrize(
    ("first", "name"), [(0x20, "CONNACK"), (0x90, "SUBACK"), (0xB0, "UNSUBACK"), (0xD0, "PINGRESP")]
)
def test_server_packets_from_a_client(codec: ModuleType, first: int, name: str) -> None:
    """§2.2.1 table 2.1: these packets flow server to client only."""
    exc = violation(codec, CONNECT + bytes((first, 0)))
    assert str(exc) == f"{name} is sent by servers, not clients"


@pytest.mark.parametrize("ptype", [0, 15])
def test_reserved_packet_types(codec: ModuleType, ptype: int) -> None:
    """§2.2.1 table 2.1: types 0 and 15 are reserved."""
    exc = violation(codec, CONNECT + bytes((ptype << 4, 0)))
    assert str(exc) == f"reserved packet type {ptype}"


def test_remaining_length_longer_than_four_bytes(codec: ModuleType) -> None:
    """§2.2.3: the variable byte integer has at most four bytes."""
    exc = violation(codec, CONNECT + b"\x30\xff\xff\xff\xff\x01", max_packet_size=2**30)
    assert type(exc) is MalformedPacket
    assert "longer than 4 bytes" in str(exc)


@pytest.mark.parametrize(
    ("remaining", "size"),
    [
        (0, 2),
        (127, 129),
        (128, 131),
        (16_383, 16_386),
        (16_384, 16_388),
        (2_097_151, 2_097_155),
        (2_097_152, 2_097_157),
        (268_435_455, 268_435_460),
    ],
)
def test_packet_size_at_varint_boundaries(codec: ModuleType, remaining: int, size: int) -> None:
    """§2.2.3: size = 1 + length of the Remaining Length field + Remaining Length."""
    assert codec.packet_size(remaining) == size
    assert len(mb.pack_remaining_length(remaining)) + 1 + remaining == size


def test_packet_size_out_of_range(codec: ModuleType) -> None:
    with pytest.raises(ValueError):
        codec.packet_size(268_435_456)
    with pytest.raises(ValueError):
        codec.packet_size(-1)


def _publish_of_size(size: int) -> bytes:
    """A QoS 0 PUBLISH of exactly ``size`` bytes on the wire (sizes 131..16386)."""
    payload_len = size - 3 - 2 - 1  # 2-byte varint, 2-byte topic length, 1-byte topic
    packet = mb.gen_publish("t", b"p" * payload_len)
    assert len(packet) == size
    return packet


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_packet_size_limit(codec: ModuleType, delta: int) -> None:
    """The connector limit, counted as the whole packet: limit-1 and limit pass, limit+1
    raises PacketTooLarge."""
    limit = 1000
    packet = _publish_of_size(limit + delta)
    if delta <= 0:
        [publish] = decode(codec, CONNECT + packet, max_packet_size=limit)[1:]
        assert isinstance(publish, Publish)
    else:
        exc = violation(codec, CONNECT + packet, max_packet_size=limit)
        assert type(exc) is PacketTooLarge
        assert str(exc) == ("PUBLISH of 1001 bytes exceeds the maximum packet size of 1000 bytes")


def test_oversize_detected_from_the_fixed_header_alone(codec: ModuleType) -> None:
    """An oversize packet is refused before its body is buffered (mosquitto packet__read)."""
    header = b"\x30" + mb.pack_remaining_length(10_000_000)
    decoder = codec.Decoder(max_packet_size=4096)
    decoder.receive_data(CONNECT)
    assert isinstance(decoder.next_event(), Connect)
    decoder.receive_data(header)
    with pytest.raises(PacketTooLarge):
        decoder.next_event()


def test_default_limit_is_256_kib_plus_headroom(codec: ModuleType) -> None:
    assert codec.Decoder().max_packet_size == codec.DEFAULT_MAX_PACKET_SIZE
    assert codec.DEFAULT_MAX_PACKET_SIZE > 256 * 1024


# --- PUBLISH (§3.3) ---------------------------------------------------------------------------


@pytest.mark.parametrize(("qos", "mid"), [(0, 0), (1, 7), (2, 65535)])
def test_publish_qos_levels(codec: ModuleType, qos: int, mid: int) -> None:
    """§3.3.2.2: the packet identifier is present only for QoS 1 and 2."""
    packet = decode_one(codec, mb.gen_publish("$resource/a", b"98.7", qos=qos, mid=mid))
    assert packet == Publish("$resource/a", b"98.7", qos, False, False, mid)


def test_publish_retain_dup_and_empty_payload(codec: ModuleType) -> None:
    """§3.3.1: DUP bit 3, RETAIN bit 0; a zero-length payload is valid (§3.3.3)."""
    packet = decode_one(
        codec, mb.gen_publish("$provision/00AB", b"", qos=1, mid=1, retain=True, dup=True)
    )
    assert packet == Publish("$provision/00AB", b"", 1, True, True, 1)


def test_publish_qos3(codec: ModuleType) -> None:
    """MQTT-3.3.1-4: QoS bits 11 close the connection."""
    exc = violation(codec, CONNECT + b"\x36\x05\x00\x01tab")
    assert str(exc) == "PUBLISH with QoS 3 (MQTT-3.3.1-4)"


def test_publish_packet_id_zero(codec: ModuleType) -> None:
    """MQTT-2.3.1-1: packet identifiers are non-zero."""
    exc = violation(codec, CONNECT + mb.gen_publish("t", b"x", qos=1, mid=0))
    assert str(exc) == "PUBLISH packet identifier is 0 (MQTT-2.3.1-1)"


@pytest.mark.parametrize("topic", ["a/+", "#", "a/#/b", "x+y"])
def test_publish_topic_with_wildcard(codec: ModuleType, topic: str) -> None:
    """MQTT-3.3.2-2: the topic name must not contain wildcard characters."""
    exc = violation(codec, CONNECT + mb.gen_publish(topic, b"x"))
    assert "MQTT-3.3.2-2" in str(exc)


def test_publish_empty_topic(codec: ModuleType) -> None:
    """MQTT-4.7.3-1: topic names are at least one character long."""
    exc = violation(codec, CONNECT + mb.gen_publish("", b"x"))
    assert str(exc) == "PUBLISH topic is empty (MQTT-4.7.3-1)"


def test_publish_topic_not_utf8(codec: ModuleType) -> None:
    """MQTT-1.5.3-1 in a topic name."""
    exc = violation(codec, CONNECT + mb.gen_publish(b"a\xff", b"x"))
    assert str(exc) == "PUBLISH topic is not valid UTF-8 (MQTT-1.5.3-1)"


# --- acknowledgements, subscriptions, ping, disconnect ----------------------------------------


def test_acks(codec: ModuleType) -> None:
    """§3.4-3.7: PUBACK, PUBREC, PUBREL (flags 0b0010), PUBCOMP."""
    assert decode_one(codec, mb.gen_puback(1)) == PubAck(1)
    assert decode_one(codec, mb.gen_pubrec(300)) == PubRec(300)
    assert decode_one(codec, mb.gen_pubrel(65535)) == PubRel(65535)
    assert decode_one(codec, mb.gen_pubcomp(2)) == PubComp(2)


def test_ack_with_wrong_remaining_length(codec: ModuleType) -> None:
    """§3.4.1: the remaining length of PUBACK is 2."""
    exc = violation(codec, CONNECT + b"\x40\x03\x00\x01\x00")
    assert str(exc) == "PUBACK remaining length is 3, expected 2"


def test_ack_packet_id_zero(codec: ModuleType) -> None:
    """MQTT-2.3.1-1 for acknowledgements."""
    exc = violation(codec, CONNECT + mb.gen_pubrel(0))
    assert str(exc) == "PUBREL packet identifier is 0 (MQTT-2.3.1-1)"


def test_subscribe_filters(codec: ModuleType) -> None:
    """§3.8.3 and §4.7.1: valid filters with wildcards as whole levels."""
    topics = [("#", 0), ("+", 1), ("a/+/b", 2), ("/#", 1), ("$resource/+/#", 0)]
    assert decode_one(codec, mb.gen_subscribe(9, topics)) == Subscribe(9, topics)


def test_subscribe_without_filters(codec: ModuleType) -> None:
    """MQTT-3.8.3-3: at least one topic filter."""
    exc = violation(codec, CONNECT + b"\x82\x02\x00\x01")
    assert str(exc) == "SUBSCRIBE without topic filters (MQTT-3.8.3-3)"


@pytest.mark.parametrize("qos_byte", [3, 4, 0x81])
def test_subscribe_bad_requested_qos(codec: ModuleType, qos_byte: int) -> None:
    """MQTT-3.8.3-4: requested QoS above 2 or reserved bits set close the connection."""
    exc = violation(codec, CONNECT + mb.gen_subscribe(1, [("a", qos_byte)]))
    assert "MQTT-3.8.3-4" in str(exc)


@pytest.mark.parametrize("topic", ["a/#/b", "a#", "a/b+", "++", "#/"])
def test_subscribe_misplaced_wildcards(codec: ModuleType, topic: str) -> None:
    """MQTT-4.7.1-2 (# last and alone), MQTT-4.7.1-3 (+ alone in its level)."""
    exc = violation(codec, CONNECT + mb.gen_subscribe(1, [(topic, 0)]))
    assert "misplaced wildcard" in str(exc)


def test_subscribe_missing_qos_byte(codec: ModuleType) -> None:
    """§3.8.3: each filter is followed by a requested-QoS byte."""
    exc = violation(codec, CONNECT + b"\x82\x05\x00\x01\x00\x01a")
    assert str(exc) == "SUBSCRIBE requested QoS runs past the end of the packet"


def test_unsubscribe(codec: ModuleType) -> None:
    """§3.10."""
    assert decode_one(codec, mb.gen_unsubscribe(4, ["a/+", "b"])) == Unsubscribe(4, ["a/+", "b"])
    exc = violation(codec, CONNECT + b"\xa2\x02\x00\x04")
    assert str(exc) == "UNSUBSCRIBE without topic filters (MQTT-3.10.3-2)"


def test_pingreq_and_disconnect(codec: ModuleType) -> None:
    """§3.12, §3.14."""
    assert decode_one(codec, mb.gen_pingreq()) == PingReq()
    assert decode_one(codec, mb.gen_disconnect()) == Disconnect()
    exc = violation(codec, CONNECT + b"\xc0\x01\x00")
    assert str(exc) == "PINGREQ remaining length is 1, expected 0"


# --- streaming behaviour ----------------------------------------------------------------------


def test_events_returns_good_packets_before_a_violation(codec: ModuleType) -> None:
    """The good packets of a read are delivered; the violation is raised on the next call."""
    decoder = codec.Decoder()
    decoder.receive_data(CONNECT + mb.gen_puback(1) + b"\x00\x00")
    assert decoder.events() == [decode(codec, CONNECT)[0], PubAck(1)]
    for _ in range(2):  # the cursor stays at the bad packet
        with pytest.raises(MalformedPacket):
            decoder.events()


def test_split_reads_and_buffer_accounting(codec: ModuleType) -> None:
    data = CONNECT + mb.gen_publish("a", b"x" * 300, qos=1, mid=3)
    decoder = codec.Decoder()
    decoder.receive_data(data[:20])
    assert isinstance(decoder.next_event(), Connect)
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered_bytes == 20 - len(CONNECT)
    decoder.receive_data(data[20:])
    assert decoder.events() == [Publish("a", b"x" * 300, 1, False, False, 3)]
    assert decoder.buffered_bytes == 0
    assert decoder.events() == []


# --- encoders (server to client) --------------------------------------------------------------


def test_encode_connack(codec: ModuleType) -> None:
    """§3.2."""
    assert codec.encode_connack(False, 0) == mb.gen_connack(0)
    assert codec.encode_connack(True, 0) == mb.gen_connack(0, session_present=True)
    assert codec.encode_connack(False, 4) == mb.gen_connack(4)


@pytest.mark.parametrize("payload_len", [0, 10, 200, 20_000])
@pytest.mark.parametrize(("qos", "mid"), [(0, 0), (1, 1), (2, 513)])
def test_encode_publish(codec: ModuleType, payload_len: int, qos: int, mid: int) -> None:
    """§3.3, with 1-, 2- and 3-byte remaining lengths."""
    payload = bytes(range(256)) * (payload_len // 256) + b"z" * (payload_len % 256)
    topic = "$resource/data_out/1538080072997000"
    assert codec.encode_publish(topic, payload, qos, mid) == mb.gen_publish(
        topic, payload, qos=qos, mid=mid
    )


def test_encode_publish_flags_and_unicode_topic(codec: ModuleType) -> None:
    expected = mb.gen_publish("é/ü", b"v", qos=1, mid=2, retain=True, dup=True)
    assert codec.encode_publish("é/ü", b"v", qos=1, packet_id=2, retain=True, dup=True) == expected


def test_encode_acks(codec: ModuleType) -> None:
    """§3.4-3.7, §3.11, §3.13."""
    assert codec.encode_puback(258) == mb.gen_puback(258)
    assert codec.encode_pubrec(1) == mb.gen_pubrec(1)
    assert codec.encode_pubrel(65535) == mb.gen_pubrel(65535)
    assert codec.encode_pubcomp(7) == mb.gen_pubcomp(7)
    assert codec.encode_unsuback(9) == mb.gen_unsuback(9)
    assert codec.encode_pingresp() == mb.gen_pingresp()


def test_encode_pubacks_coalesced(codec: ModuleType) -> None:
    pids = [1, 2, 300, 65535]
    assert codec.encode_pubacks(pids) == b"".join(mb.gen_puback(p) for p in pids)
    assert codec.encode_pubacks(iter(pids)) == b"".join(mb.gen_puback(p) for p in pids)
    assert codec.encode_pubacks([]) == b""


def test_encode_suback(codec: ModuleType) -> None:
    """§3.9: return codes 0, 1, 2 and 0x80 (failure)."""
    assert codec.encode_suback(5, [0, 1, 2, 0x80]) == mb.gen_suback(5, [0, 1, 2, 0x80])
    assert codec.encode_suback(5, [1] * 200) == mb.gen_suback(5, [1] * 200)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.encode_puback(0),
        lambda c: c.encode_puback(65536),
        lambda c: c.encode_pubacks([1, 0]),
        lambda c: c.encode_publish("t", b"", 1, 0),
        lambda c: c.encode_publish("t", b"", 0, 5),
        lambda c: c.encode_publish("t", b"", 3, 5),
        lambda c: c.encode_publish("t" * 65536, b""),
        lambda c: c.encode_suback(1, [3]),
        lambda c: c.encode_suback(1, []),
        lambda c: c.encode_connack(False, 256),
    ],
)
def test_encoder_argument_errors(codec: ModuleType, call: object) -> None:
    with pytest.raises(ValueError):
        call(codec)  # type: ignore[operator]
