"""First-byte classification and the replaying stream (gateway/frontdoor/sniff.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.frontdoor.sniff import ReplayStream, Route, classify_first_byte


def test_classification_boundaries() -> None:
    assert classify_first_byte(0x10) is Route.MQTT
    for byte in b"GPDHOCTpgAZaz":
        assert classify_first_byte(byte) is Route.HTTP
    for byte in (0x00, 0x11, 0x12, 0x20, 0x30, 0x40, 0x5B, 0x60, 0x7B, 0x16, 0xFF, ord("0")):
        assert classify_first_byte(byte) is None


async def test_replay_then_passthrough() -> None:
    left, right = trio.testing.memory_stream_pair()
    replay = ReplayStream(right, b"abcdef")
    assert await replay.receive_some(4) == b"abcd"
    assert await replay.receive_some() == b"ef"
    await left.send_all(b"xyz")
    assert await replay.receive_some(10) == b"xyz"
    await replay.send_all(b"out")
    assert await left.receive_some(10) == b"out"
    with pytest.raises(ValueError):
        await ReplayStream(right, b"q").receive_some(0)
    await replay.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await right.send_all(b"closed")
