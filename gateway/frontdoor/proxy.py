"""The PROXY protocol header, versions 1 and 2, read without I/O.

A TCP proxy in front of the gateway (HAProxy in TCP mode with ``send-proxy-v2``, an AWS
NLB, ...) opens its own connection to us and announces, before the first byte of the
device's TLS, the addresses of the connection it relays: the PROXY protocol (HAProxy's
``doc/proxy-protocol.txt``, 2020/03/05).  The front door feeds the first bytes of a
connection to :class:`ProxyHeaderReader` and asks what they are
(:mod:`gateway.frontdoor.connection` decides what to do about it: which peers may send a
header, docs/decisions.md "Addresses"):

* :class:`ProxyHeader` — a complete, valid header; :attr:`ProxyHeaderReader.trailing_data`
  holds the bytes that followed it (the start of the ClientHello);
* :data:`NO_HEADER` — the bytes cannot start a header (a TLS record starts with 0x16, an
  MQTT CONNECT with 0x10, ``POST`` differs from ``PROXY`` at its second byte); the trailing
  data is then every byte received;
* :data:`CLOSED` — the peer closed before sending a byte (a TCP health check);
* :data:`NEED_DATA` — not enough bytes to tell yet.

A header that is malformed, truncated by EOF, or larger than the limits raises
:class:`ProxyHeaderError` (the connection must be dropped, spec §2.1 and §2.2).

Version 1 (spec §2.1) is one US-ASCII line of at most :data:`V1_MAX_LINE` bytes:
``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` with single spaces, canonical
addresses of the announced family, decimal ports without leading zeros, or
``PROXY UNKNOWN`` followed by anything up to the CRLF.

Version 2 (spec §2.2) is binary: the 12-byte :data:`V2_SIGNATURE`, version/command
(version 2; ``LOCAL`` or ``PROXY``), family/transport, a 16-bit length, the address block
and TLVs.  TLVs are walked (each must fit inside the header) and ignored: none carries
anything the gateway needs, and the CRC32C TLV is optional to check for a receiver that
does not implement it.

A header with no usable address — ``LOCAL`` (the proxy's own connection, e.g. a health
check), ``UNKNOWN``, the ``UNSPEC`` family or transport, ``AF_UNIX``, UDP — keeps the
connection's own addresses, as the spec asks (``source_ip`` is None).  Addresses are
normalised (:func:`gateway.addresses.normalize_ip`: an IPv4-mapped IPv6 source is IPv4).

Sans-IO (docs/architecture.md principle 1): bytes in, events out.
"""

from __future__ import annotations

import ipaddress
from enum import IntEnum
from typing import ClassVar, Final

import msgspec

from gateway.addresses import normalize_ip
from gateway.errors import GatewayError

__all__ = [
    "CLOSED",
    "MAX_HEADER_BYTES",
    "NEED_DATA",
    "NO_HEADER",
    "V1_MAX_LINE",
    "V1_SIGNATURE",
    "V2_SIGNATURE",
    "Closed",
    "Command",
    "NeedData",
    "NoHeader",
    "ProxyEvent",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderReader",
]

V1_SIGNATURE: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_LINE: Final = 107  # spec §2.1: the worst case line, CRLF included
V2_FIXED: Final = 16  # signature, version/command, family/transport, length
V2_VERSION: Final = 0x2  # high nibble of byte 13
MAX_HEADER_BYTES: Final = 2048  # a v2 header (TLVs included) larger than this is refused
_MIN_MAX_HEADER = V2_FIXED + 216  # an AF_UNIX address block must fit

# v2 family (high nibble of byte 14) and transport (low nibble), spec §2.2
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_UNSPEC, _STREAM, _DGRAM = 0x0, 0x1, 0x2
_ADDRESS_BLOCK = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_TLV_HEAD = 3  # type, length (16 bits)


class Command(IntEnum):
    """Version 2's command (low nibble of byte 13); version 1 always means PROXY."""

    LOCAL = 0x0  # the proxy's own connection (health checks): use the real endpoints
    PROXY = 0x1  # relayed on behalf of the client the header names


class ProxyHeaderError(GatewayError):
    """The bytes start a PROXY header that is malformed, truncated or too large: the
    connection must be dropped (spec §2.1: "Any sequence which does not exactly match the
    protocol must be discarded")."""

    code: ClassVar[str] = "bad_proxy_header"
    http_status = 400


class ProxyHeader(msgspec.Struct, frozen=True, gc=False):
    """A complete header.  ``source_ip`` is None when it carries no usable address (see the
    module docstring): the connection's own addresses stand."""

    version: int  # 1 or 2
    command: Command
    size: int  # bytes of the header on the wire
    source_ip: str | None = None
    source_port: int = 0
    dest_ip: str | None = None
    dest_port: int = 0


class NeedData:
    """Sentinel type of :data:`NEED_DATA` (compare with ``is``)."""

    __slots__ = ()


class NoHeader:
    """Sentinel type of :data:`NO_HEADER`."""

    __slots__ = ()


class Closed:
    """Sentinel type of :data:`CLOSED`."""

    __slots__ = ()


NEED_DATA: Final = NeedData()
NO_HEADER: Final = NoHeader()
CLOSED: Final = Closed()

ProxyEvent = ProxyHeader | NeedData | NoHeader | Closed


class ProxyHeaderReader:
    """Reads the optional PROXY header at the start of one connection.

    Feed bytes with :meth:`receive_data` (``b""`` is EOF) until :meth:`next_event` answers
    something other than :data:`NEED_DATA`; that answer is final (asked again, it is
    repeated) and :attr:`trailing_data` then holds the bytes after the header.  The reader
    buffers at most the header plus one received chunk: it decides within
    ``max_header_bytes`` bytes (v1 lines within :data:`V1_MAX_LINE`).

    Raises :class:`ProxyHeaderError` from :meth:`next_event` for a bad header.  Raises
    ``ValueError`` for a ``max_header_bytes`` too small for a valid address block.
    """

    __slots__ = ("_buf", "_eof", "_event", "_size", "max_header_bytes")

    def __init__(self, *, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        if max_header_bytes < _MIN_MAX_HEADER:
            raise ValueError(f"max_header_bytes must be at least {_MIN_MAX_HEADER}")
        self.max_header_bytes = max_header_bytes
        self._buf = bytearray()
        self._eof = False
        self._event: ProxyEvent = NEED_DATA
        self._size = 0  # header bytes, once known

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes received; ``b""`` means the peer closed its side."""
        if self._event is not NEED_DATA:
            raise RuntimeError("the reader has decided: use trailing_data")
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def trailing_data(self) -> bytes:
        """What followed the header (everything, after :data:`NO_HEADER`)."""
        return bytes(self._buf[self._size :])

    def next_event(self) -> ProxyEvent:
        if self._event is NEED_DATA:
            self._event = self._decide()
        return self._event

    # -- internals ------------------------------------------------------------------------

    def _decide(self) -> ProxyEvent:
        buf = self._buf
        if not buf:
            return CLOSED if self._eof else NEED_DATA
        for signature, parse in ((V1_SIGNATURE, self._v1), (V2_SIGNATURE, self._v2)):
            n = min(len(buf), len(signature))
            if buf[:n] == signature[:n]:
                if n < len(signature):
                    return self._need("signature")
                return parse()
        return NO_HEADER

    def _need(self, what: str) -> NeedData:
        if self._eof:
            raise ProxyHeaderError(f"connection closed inside the PROXY header ({what})")
        return NEED_DATA

    def _v1(self) -> ProxyEvent:
        end = self._buf.find(b"\r\n", 0, V1_MAX_LINE)
        if end < 0:
            if len(self._buf) >= V1_MAX_LINE:
                raise ProxyHeaderError(f"PROXY v1 line without CRLF in {V1_MAX_LINE} bytes")
            return self._need("v1 line")
        header = _parse_v1(bytes(self._buf[len(V1_SIGNATURE) : end]), size=end + 2)
        self._size = header.size
        return header

    def _v2(self) -> ProxyEvent:
        buf = self._buf
        if len(buf) < V2_FIXED:
            return self._need("v2 fixed part")
        ver_cmd, fam = buf[12], buf[13]
        if ver_cmd >> 4 != V2_VERSION:
            raise ProxyHeaderError(f"PROXY v2: version {ver_cmd >> 4}, not 2")
        command = ver_cmd & 0x0F
        if command not in (Command.LOCAL, Command.PROXY):
            raise ProxyHeaderError(f"PROXY v2: unknown command 0x{command:x}")
        family, transport = fam >> 4, fam & 0x0F
        if family not in _ADDRESS_BLOCK or transport not in (_UNSPEC, _STREAM, _DGRAM):
            raise ProxyHeaderError(f"PROXY v2: unknown family/transport 0x{fam:02x}")
        size = V2_FIXED + int.from_bytes(buf[14:16], "big")
        if size > self.max_header_bytes:
            raise ProxyHeaderError(
                f"PROXY v2 header of {size} bytes, above the limit of {self.max_header_bytes}"
            )
        if len(buf) < size:
            return self._need("v2 address block")
        self._size = size
        block = bytes(buf[V2_FIXED:size])
        if command == Command.LOCAL:  # spec: discard the block, family included
            return ProxyHeader(2, Command.LOCAL, size)
        need = _ADDRESS_BLOCK[family]
        if len(block) < need:
            raise ProxyHeaderError(
                f"PROXY v2: {len(block)} address bytes, family 0x{family:x} needs {need}"
            )
        _check_tlvs(block, need)
        if transport != _STREAM or family not in (_AF_INET, _AF_INET6):
            return ProxyHeader(2, Command.PROXY, size)  # UNSPEC, UNIX or UDP: real endpoints
        width = 4 if family == _AF_INET else 16
        src = _ip_from_bytes(block[:width])
        dst = _ip_from_bytes(block[width : 2 * width])
        ports = block[2 * width : 2 * width + 4]
        return ProxyHeader(
            2,
            Command.PROXY,
            size,
            source_ip=src,
            source_port=int.from_bytes(ports[:2], "big"),
            dest_ip=dst,
            dest_port=int.from_bytes(ports[2:], "big"),
        )


def _check_tlvs(block: bytes, start: int) -> None:
    """Each TLV after the address block must fit inside the header (spec §2.2)."""
    i = start
    while i < len(block):
        if len(block) - i < _TLV_HEAD:
            raise ProxyHeaderError("PROXY v2: a TLV cut short in its type/length")
        i += _TLV_HEAD + int.from_bytes(block[i + 1 : i + 3], "big")
        if i > len(block):
            raise ProxyHeaderError("PROXY v2: a TLV runs past the end of the header")


def _ip_from_bytes(raw: bytes) -> str:
    return normalize_ip(str(ipaddress.ip_address(raw)))


def _parse_v1(rest: bytes, *, size: int) -> ProxyHeader:
    """The part of a v1 line between ``PROXY `` and the CRLF."""
    if rest == b"UNKNOWN" or rest.startswith(b"UNKNOWN "):
        return ProxyHeader(1, Command.PROXY, size)  # the rest of the line is ignored
    try:
        text = rest.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not US-ASCII") from None
    fields = text.split(" ")
    if len(fields) != 5:
        raise ProxyHeaderError(f"PROXY v1 line has {len(fields)} fields after PROXY, not 5")
    proto, src, dst, sport, dport = fields
    if proto not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY v1: protocol {proto[:8]!r} is none of TCP4, TCP6, UNKNOWN")
    return ProxyHeader(
        1,
        Command.PROXY,
        size,
        source_ip=_v1_address(src, proto),
        source_port=_v1_port(sport),
        dest_ip=_v1_address(dst, proto),
        dest_port=_v1_port(dport),
    )


def _v1_address(text: str, proto: str) -> str:
    try:
        # IPv4Address refuses leading zeros (the spec forbids them: octal confusion)
        addr = (ipaddress.IPv4Address if proto == "TCP4" else ipaddress.IPv6Address)(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1: {text[:45]!r} is no {proto} address") from None
    if "%" in text:
        raise ProxyHeaderError("PROXY v1: an address with a zone")
    return normalize_ip(str(addr))


def _v1_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError(f"PROXY v1: port {text[:8]!r} is not 0-65535 without leading 0")
    port = int(text)
    if port > 0xFFFF:
        raise ProxyHeaderError(f"PROXY v1: port {port} is above 65535")
    return port
