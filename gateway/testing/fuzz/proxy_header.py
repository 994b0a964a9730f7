"""Fuzz target: the sans-IO PROXY protocol header reader (``gateway/frontdoor/proxy.py``).

Input: one control byte (how the bytes are cut into reads: whole, 1, 5 or 64 bytes; bit
0x80: EOF after the last byte), then the bytes a proxy (or anyone) sends first.

Invariants:

* the only exception is :class:`~gateway.frontdoor.proxy.ProxyHeaderError`;
* cutting the input into reads changes nothing: the same event (header fields included) or
  the same error message;
* a header never claims more bytes than were received nor more than the reader's limit,
  and the bytes after it are exactly the rest of the input; after ``NO_HEADER`` they are
  the whole input;
* a decided reader repeats its event.
"""

from __future__ import annotations

import struct

from gateway.frontdoor.proxy import (
    MAX_HEADER_BYTES,
    NEED_DATA,
    NO_HEADER,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
)

__all__ = ["NAME", "check", "seeds"]

NAME = "proxy_header"
_CUTS = (0, 1, 5, 64)


def _run(data: bytes, step: int, eof: bool) -> tuple[object, bytes]:
    reader = ProxyHeaderReader()
    reads = [data[i : i + step] for i in range(0, len(data), step)] if step else [data]
    if eof:
        reads.append(b"")
    fed = b""
    for chunk in reads:
        try:
            event = reader.next_event()
        except ProxyHeaderError as exc:
            return ("error", exc.message), b""
        if event is not NEED_DATA:
            break
        if chunk or eof:
            reader.receive_data(chunk)
        fed += chunk
    try:
        event = reader.next_event()
    except ProxyHeaderError as exc:
        return ("error", exc.message), b""
    assert reader.next_event() is event, "a decided reader changed its mind"
    if isinstance(event, ProxyHeader):
        assert event.size <= len(fed), (event, len(fed))
        assert event.size <= MAX_HEADER_BYTES, event
        assert reader.trailing_data == fed[event.size :]
    elif event is NO_HEADER:
        assert reader.trailing_data == fed
    return event, fed


def check(data: bytes) -> None:
    if not data:
        return
    control, rest = data[0], data[1:]
    eof = bool(control & 0x80)
    whole, _ = _run(rest, 0, eof)
    step = _CUTS[control & 0x03]
    if step:
        cut, _ = _run(rest, step, eof)
        assert cut == whole, (whole, cut)


def _v2(cmd: int, fam: int, block: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(block)) + block


def seeds() -> list[bytes]:
    hello = b"\x16\x03\x01\x00\x05hello"
    tcp4 = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 50000, 443)
    tcp6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 1, 2)
    return [
        b"\x00PROXY TCP4 192.0.2.1 198.51.100.2 50000 443\r\n" + hello,
        b"\x01PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
        b"\x82PROXY UNKNOWN\r\n",
        b"\x00" + _v2(1, 0x11, tcp4) + hello,
        b"\x03" + _v2(1, 0x21, tcp6 + b"\x01\x00\x02h2"),
        b"\x81" + _v2(0, 0x00, b""),
        b"\x02" + _v2(1, 0x31, bytes(216)),
        b"\x00" + hello,
        b"\x80",
    ]
