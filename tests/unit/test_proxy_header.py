"""The sans-IO PROXY protocol reader (gateway/frontdoor/proxy.py) on raw bytes.

Expected values are written out from HAProxy's doc/proxy-protocol.txt (§2.1, §2.2), never
produced by the reader's own code: the v2 headers are assembled byte by byte here.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.frontdoor.proxy import (
    CLOSED,
    MAX_HEADER_BYTES,
    NEED_DATA,
    NO_HEADER,
    V2_SIGNATURE,
    Command,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"  # spec §2.2, written out
HELLO = b"\x16\x03\x01\x00\x05hello"  # the start of a TLS record (ClientHello)


def v2(cmd: int, fam: int, block: bytes, *, version: int = 2) -> bytes:
    return SIG + bytes([(version << 4) | cmd, fam]) + struct.pack("!H", len(block)) + block


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    def a(ip: str) -> bytes:
        return bytes(int(x) for x in ip.split("."))

    return v2(0x1, 0x11, a(src) + a(dst) + struct.pack("!HH", sport, dport) + tlvs)


def feed(data: bytes, *, eof: bool = False, step: int | None = None) -> ProxyHeaderReader:
    """A reader given ``data`` (in ``step``-byte chunks) until it decides, then EOF."""
    reader = ProxyHeaderReader()
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    chunks += [b""] if eof else []
    for chunk in chunks:
        if not _undecided(reader):
            break
        reader.receive_data(chunk)
    return reader


def _undecided(reader: ProxyHeaderReader) -> bool:
    try:
        return reader.next_event() is NEED_DATA
    except ProxyHeaderError:
        return False


def test_signature_constant_matches_the_spec() -> None:
    assert V2_SIGNATURE == SIG
    assert len(SIG) == 12


# -- version 1 ---------------------------------------------------------------------------------


def test_v1_tcp4_and_trailing_bytes() -> None:
    line = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
    reader = feed(line + HELLO)
    ev = reader.next_event()
    assert ev == ProxyHeader(1, Command.PROXY, len(line), "192.0.2.10", 56324, "198.51.100.1", 443)
    assert reader.trailing_data == HELLO


def test_v1_tcp6_is_compressed_and_mapped_is_ipv4() -> None:
    line = b"PROXY TCP6 2001:DB8:0:0::1 ::ffff:192.0.2.7 1 65535\r\n"
    ev = feed(line).next_event()
    assert isinstance(ev, ProxyHeader)
    assert (ev.source_ip, ev.dest_ip, ev.source_port, ev.dest_port) == (
        "2001:db8::1",
        "192.0.2.7",
        1,
        65535,
    )


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff:f::1 x y z\r\n"])
def test_v1_unknown_keeps_the_socket_addresses(line: bytes) -> None:
    reader = feed(line + b"rest")
    ev = reader.next_event()
    assert isinstance(ev, ProxyHeader)
    assert ev.source_ip is None
    assert ev.size == len(line)
    assert reader.trailing_data == b"rest"


def test_v1_byte_by_byte() -> None:
    line = b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n"
    reader = feed(line + HELLO, step=1)
    ev = reader.next_event()
    assert isinstance(ev, ProxyHeader)
    assert ev.source_ip == "10.0.0.1"
    assert reader.trailing_data == HELLO[: len(reader.trailing_data)]


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 10.0.0.1 10.0.0.2 1000\r\n",  # a field missing
        b"PROXY TCP4 10.0.0.1  10.0.0.2 1000 2000\r\n",  # double space
        b"PROXY TCP4 10.0.0.01 10.0.0.2 1000 2000\r\n",  # leading zero in an octet
        b"PROXY TCP4 ::1 10.0.0.2 1000 2000\r\n",  # wrong family
        b"PROXY TCP6 10.0.0.1 ::1 1000 2000\r\n",
        b"PROXY TCP4 10.0.0.1 10.0.0.2 01000 2000\r\n",  # leading zero in a port
        b"PROXY TCP4 10.0.0.1 10.0.0.2 65536 2000\r\n",  # port too large
        b"PROXY TCP4 10.0.0.1 10.0.0.2 -1 2000\r\n",
        b"PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",  # zone
        b"PROXY TCP4 10.0.0.1 10.0.0.2 \xd9\xa1 2\r\n",  # a non-ASCII digit
        b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\n",  # LF without CR (no CRLF in 107 bytes)
    ],
)
def test_v1_malformed_lines_are_refused(line: bytes) -> None:
    reader = feed(line + b"x" * 120)
    with pytest.raises(ProxyHeaderError):
        reader.next_event()


def test_v1_line_longer_than_107_bytes_is_refused() -> None:
    reader = feed(b"PROXY UNKNOWN " + b"a" * 100)  # no CRLF in the first 107 bytes
    with pytest.raises(ProxyHeaderError, match="107"):
        reader.next_event()


def test_v1_longest_valid_line_fits() -> None:
    addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
    line = f"PROXY TCP6 {addr} {addr} 65535 65535\r\n".encode()
    assert len(line) == 104  # spec §2.1's worst case TCP6 line (107 with UNKNOWN's slack)
    ev = feed(line).next_event()
    assert isinstance(ev, ProxyHeader)
    assert ev.source_ip == addr


def test_v1_truncated_by_eof() -> None:
    reader = feed(b"PROXY TCP4 10.0.0.1 10.0", eof=True)
    with pytest.raises(ProxyHeaderError, match="closed inside"):
        reader.next_event()


# -- version 2 ---------------------------------------------------------------------------------


def test_v2_tcp4() -> None:
    header = v2_tcp4("192.0.2.10", "198.51.100.1", 56324, 8443)
    assert len(header) == 16 + 12
    reader = feed(header + HELLO)
    assert reader.next_event() == ProxyHeader(
        2, Command.PROXY, 28, "192.0.2.10", 56324, "198.51.100.1", 8443
    )
    assert reader.trailing_data == HELLO


def test_v2_tcp6_with_tlvs() -> None:
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("00000000000000000000000000000001")
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x03abc"  # PP2_TYPE_ALPN, PP2_TYPE_NOOP
    header = v2(0x1, 0x21, src + dst + struct.pack("!HH", 40000, 443) + tlvs)
    reader = feed(header + HELLO, step=5)
    ev = reader.next_event()
    assert ev == ProxyHeader(2, Command.PROXY, len(header), "2001:db8::1", 40000, "::1", 443)
    assert reader.trailing_data.startswith(HELLO[:1])


def test_v2_tcp6_mapped_source_is_ipv4() -> None:
    src = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])
    header = v2(0x1, 0x21, src + src + struct.pack("!HH", 1, 2))
    ev = feed(header).next_event()
    assert isinstance(ev, ProxyHeader)
    assert ev.source_ip == "192.0.2.7"


def test_v2_local_ignores_the_block() -> None:
    header = v2(0x0, 0x11, bytes(12))  # HAProxy's health checks: LOCAL with an address block
    ev = feed(header + b"x").next_event()
    assert ev == ProxyHeader(2, Command.LOCAL, len(header))
    header = v2(0x0, 0x00, b"")
    assert feed(header).next_event() == ProxyHeader(2, Command.LOCAL, 16)


@pytest.mark.parametrize(
    ("fam", "block"),
    [
        (0x00, b""),  # UNSPEC
        (0x31, bytes(216)),  # AF_UNIX stream
        (0x12, bytes(12)),  # TCP4 family over UDP
    ],
)
def test_v2_proxy_without_a_usable_address(fam: int, block: bytes) -> None:
    ev = feed(v2(0x1, fam, block)).next_event()
    assert isinstance(ev, ProxyHeader)
    assert ev.command is Command.PROXY
    assert ev.source_ip is None


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (v2(0x1, 0x11, bytes(12), version=1), "version"),
        (v2(0x2, 0x11, bytes(12)), "command"),
        (v2(0x1, 0x41, bytes(12)), "family"),
        (v2(0x1, 0x13, bytes(12)), "family"),
        (v2(0x1, 0x11, bytes(8)), "address bytes"),  # block shorter than TCP4 needs
        (v2(0x1, 0x21, bytes(12)), "address bytes"),
        (v2(0x1, 0x11, bytes(12) + b"\x01\x00"), "TLV"),  # cut in its type/length
        (v2(0x1, 0x11, bytes(12) + b"\x01\x00\x05ab"), "TLV"),  # runs past the end
    ],
)
def test_v2_malformed(header: bytes, match: str) -> None:
    with pytest.raises(ProxyHeaderError, match=match):
        feed(header + HELLO).next_event()


def test_v2_oversized_is_refused_before_it_is_read() -> None:
    head = SIG + b"\x21\x11" + struct.pack("!H", MAX_HEADER_BYTES)  # 16 + 2048 > 2048
    reader = feed(head)  # only the fixed part: the length alone decides
    with pytest.raises(ProxyHeaderError, match="above the limit"):
        reader.next_event()


def test_v2_truncated_by_eof() -> None:
    header = v2_tcp4("10.0.0.1", "10.0.0.2", 1, 2)
    for cut in (5, 12, 15, 20, len(header) - 1):
        reader = feed(header[:cut], eof=True)
        with pytest.raises(ProxyHeaderError, match="closed inside"):
            reader.next_event()


def test_v2_needs_more_until_complete() -> None:
    header = v2_tcp4("10.0.0.1", "10.0.0.2", 1, 2)
    reader = ProxyHeaderReader()
    for i, byte in enumerate(header):
        assert reader.next_event() is NEED_DATA, i
        reader.receive_data(bytes([byte]))
    assert isinstance(reader.next_event(), ProxyHeader)
    assert reader.trailing_data == b""


# -- no header, closed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        HELLO,
        b"\x10\x0c\x00\x04MQTT",
        b"POST /onep:v1/stack/alias HTTP/1.1\r\n",
        b"PRI * HTTP/2.0",
        b"\r\n\r\nhello",
    ],
)
def test_other_protocols_are_no_header_and_kept_whole(data: bytes) -> None:
    reader = feed(data)
    assert reader.next_event() is NO_HEADER
    assert reader.trailing_data == data


def test_post_is_told_apart_at_its_second_byte() -> None:
    reader = ProxyHeaderReader()
    reader.receive_data(b"P")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"O")
    assert reader.next_event() is NO_HEADER
    assert reader.trailing_data == b"PO"


def test_closed_before_a_byte() -> None:
    assert feed(b"", eof=True).next_event() is CLOSED


def test_decided_reader_refuses_more_data() -> None:
    reader = feed(HELLO)
    assert reader.next_event() is NO_HEADER
    assert reader.next_event() is NO_HEADER  # repeated
    with pytest.raises(RuntimeError):
        reader.receive_data(b"more")


def test_max_header_bytes_floor() -> None:
    with pytest.raises(ValueError):
        ProxyHeaderReader(max_header_bytes=100)


# -- fuzz: any bytes, any split -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"PROXY ", SIG, SIG + b"\x21\x11", SIG + b"\x20\x00"]),
    data=st.binary(max_size=300),
    step=st.integers(min_value=1, max_value=64),
    eof=st.booleans(),
)
def test_fuzz_never_crashes_and_stays_bounded(
    prefix: bytes, data: bytes, step: int, eof: bool
) -> None:
    """Any input ends in an event or a ProxyHeaderError; the verdict does not depend on how
    the bytes were split; a header never claims more bytes than were received."""
    blob = prefix + data
    verdicts = []
    for s in (step, len(blob) or 1):
        reader = feed(blob, eof=eof, step=s)
        try:
            ev = reader.next_event()
        except ProxyHeaderError:
            verdicts.append("error")
            continue
        if isinstance(ev, ProxyHeader):
            assert ev.size <= len(blob)
            assert ev.size <= MAX_HEADER_BYTES
            assert reader.trailing_data == blob[ev.size : len(blob)][: len(reader.trailing_data)]
            verdicts.append(ev)
        else:
            verdicts.append(ev)
    assert verdicts[0] == verdicts[1]
