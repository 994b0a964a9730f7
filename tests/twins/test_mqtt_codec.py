"""Differential tests: the compiled and the pure MQTT codec agree on arbitrary bytes.

For valid packet streams (every client packet type, built with the independent
``gateway.testing.mqtt_bytes`` builders), random garbage and mutated valid streams, both
twins must return the same packets and raise the same exception class with the same
message, and the chunking of the input must not matter (h11's fuzz invariant).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._pure import mqtt_codec as pure
from gateway.errors import ProtocolViolation
from gateway.mqtt.packets import NEED_DATA
from gateway.testing import mqtt_bytes as mb


def _compiled() -> ModuleType:
    """The compiled twin; the default build must have it (no silent skip)."""
    if os.environ.get("GATEWAY_PURE_PYTHON", "") not in ("", "0"):
        module: ModuleType = pytest.importorskip("gateway._ext.mqtt_codec")
        return module
    return importlib.import_module("gateway._ext.mqtt_codec")


compiled = _compiled()

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Outcome = tuple[list[object], tuple[type, str] | None, int]

# --- strategies -------------------------------------------------------------------------------

# MQTT strings: any code point but U+0000 (MQTT-1.5.3-2) and surrogates (not encodable).
_text = st.text(
    alphabet=st.characters(exclude_characters="\x00", codec="utf-8"),
    max_size=12,
)
_topic_name = st.text(
    alphabet=st.characters(exclude_characters="+#\x00", codec="utf-8"),
    min_size=1,
    max_size=20,
)
_filter = st.builds(
    lambda levels, hash_: "/".join(levels) + ("/#" if hash_ else ""),
    st.lists(st.sampled_from(["a", "+", "bé", "", "c1"]), min_size=1, max_size=4),
    st.booleans(),
).filter(bool)
_mid = st.integers(1, 0xFFFF)


@st.composite
def connects(draw: st.DrawFn) -> bytes:
    will = draw(st.booleans())
    username = draw(st.one_of(st.none(), _text))
    level = draw(st.sampled_from([(b"MQTT", 4), (b"MQIsdp", 3)]))
    return mb.gen_connect(
        draw(_text),
        clean_session=draw(st.booleans()),
        keepalive=draw(st.integers(0, 0xFFFF)),
        username=username,
        password=draw(st.one_of(st.none(), st.binary(max_size=40)))
        if username is not None
        else None,
        will_topic=draw(_topic_name) if will else None,
        will_payload=draw(st.binary(max_size=10)),
        will_qos=draw(st.integers(0, 2)) if will else 0,
        will_retain=draw(st.booleans()) if will else False,
        proto_name=level[0],
        proto_ver=level[1],
    )


@st.composite
def publishes(draw: st.DrawFn) -> bytes:
    qos = draw(st.integers(0, 2))
    return mb.gen_publish(
        draw(_topic_name),
        draw(st.binary(max_size=200)),
        qos=qos,
        mid=draw(_mid) if qos else 0,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()),
    )


_others = st.one_of(
    publishes(),
    st.builds(mb.gen_puback, _mid),
    st.builds(mb.gen_pubrec, _mid),
    st.builds(mb.gen_pubrel, _mid),
    st.builds(mb.gen_pubcomp, _mid),
    st.builds(
        mb.gen_subscribe,
        _mid,
        st.lists(st.tuples(_filter, st.integers(0, 2)), min_size=1, max_size=3),
    ),
    st.builds(mb.gen_unsubscribe, _mid, st.lists(_filter, min_size=1, max_size=3)),
    st.just(mb.gen_pingreq()),
    st.just(mb.gen_disconnect()),
)
streams = st.builds(lambda c, rest: [c, *rest], connects(), st.lists(_others, max_size=6))


# --- drivers ----------------------------------------------------------------------------------


def run(codec: ModuleType, chunks: Sequence[bytes], max_packet_size: int = 4096) -> Outcome:
    """Feed ``chunks`` one by one, draining with ``events()``; stop at the first error."""
    decoder = codec.Decoder(max_packet_size=max_packet_size)
    packets: list[object] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while batch := decoder.events():
                packets.extend(batch)
    except ProtocolViolation as exc:
        return packets, (type(exc), str(exc)), decoder.buffered_bytes
    return packets, None, decoder.buffered_bytes


def run_next_event(codec: ModuleType, data: bytes, max_packet_size: int = 4096) -> Outcome:
    """The same with ``next_event()`` one packet at a time."""
    decoder = codec.Decoder(max_packet_size=max_packet_size)
    decoder.receive_data(data)
    packets: list[object] = []
    try:
        while (packet := decoder.next_event()) is not NEED_DATA:
            packets.append(packet)
    except ProtocolViolation as exc:
        return packets, (type(exc), str(exc)), decoder.buffered_bytes
    return packets, None, decoder.buffered_bytes


def assert_twins_agree(data: bytes, max_packet_size: int = 4096) -> Outcome:
    expected = run(pure, [data], max_packet_size)
    assert run(compiled, [data], max_packet_size) == expected
    assert run_next_event(pure, data, max_packet_size) == expected
    assert run_next_event(compiled, data, max_packet_size) == expected
    return expected


# --- properties -------------------------------------------------------------------------------


@SETTINGS
@given(streams)
def test_valid_streams_decode_identically(packets: list[bytes]) -> None:
    data = b"".join(packets)
    decoded, error, rest = assert_twins_agree(data)
    assert error is None
    assert rest == 0
    assert len(decoded) == len(packets)


@SETTINGS
@given(streams)
def test_byte_at_a_time_equals_one_chunk(packets: list[bytes]) -> None:
    data = b"".join(packets)
    one = [data[i : i + 1] for i in range(len(data))]
    expected = run(pure, [data])
    assert run(pure, one) == expected
    assert run(compiled, one) == expected


@SETTINGS
@given(streams, st.data())
def test_random_chunking_does_not_matter(packets: list[bytes], data: st.DataObject) -> None:
    blob = b"".join(packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=8)))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
    expected = run(pure, [blob])
    assert run(pure, chunks) == expected
    assert run(compiled, chunks) == expected


@SETTINGS
@given(connects(), _others)
def test_every_strict_prefix_needs_data(connect: bytes, packet: bytes) -> None:
    for codec in (pure, compiled):
        for k in range(len(connect)):
            decoder = codec.Decoder()
            decoder.receive_data(connect[:k])
            assert decoder.next_event() is NEED_DATA
            assert decoder.events() == []
        for k in range(len(packet)):
            decoder = codec.Decoder()
            decoder.receive_data(connect + packet[:k])
            assert decoder.next_event() is not NEED_DATA
            assert decoder.next_event() is NEED_DATA
            assert decoder.buffered_bytes == k


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_garbage_gives_the_same_outcome(garbage: bytes, after_connect: bool) -> None:
    prefix = mb.gen_connect("c") if after_connect else b""
    assert_twins_agree(prefix + garbage, max_packet_size=256)


@SETTINGS
@given(
    streams,
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]), st.integers(0), st.integers(0, 255)
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_streams_give_the_same_outcome(
    packets: list[bytes], mutations: list[tuple[str, int, int]]
) -> None:
    data = bytearray(b"".join(packets))
    for op, where, byte in mutations:
        i = where % (len(data) + 1)
        if op == "insert" or i == len(data):
            data.insert(i, byte)
        elif op == "flip":
            data[i] ^= byte or 0x80
        else:
            del data[i]
    packets_a, error_a, _ = assert_twins_agree(bytes(data), max_packet_size=512)
    one = [bytes(data[i : i + 1]) for i in range(len(data))]
    # Fed byte by byte the decoder stops at the error before the rest arrives, so only
    # the packets and the error are compared.
    assert run(compiled, one, 512)[:2] == (packets_a, error_a)


@SETTINGS
@given(
    st.text(max_size=30),
    st.binary(max_size=300),
    st.integers(0, 2),
    st.integers(1, 0xFFFF),
    st.booleans(),
    st.booleans(),
)
def test_encoders_agree(
    topic: str, payload: bytes, qos: int, mid: int, retain: bool, dup: bool
) -> None:
    pid = mid if qos else 0
    assert compiled.encode_publish(topic, payload, qos, pid, retain, dup) == pure.encode_publish(
        topic, payload, qos, pid, retain, dup
    )
    assert compiled.encode_puback(mid) == pure.encode_puback(mid)
    assert compiled.encode_pubacks([mid, 1, mid]) == pure.encode_pubacks([mid, 1, mid])
    assert compiled.encode_suback(mid, [qos, 0x80]) == pure.encode_suback(mid, [qos, 0x80])
    assert compiled.packet_size(len(payload) * 997) == pure.packet_size(len(payload) * 997)
