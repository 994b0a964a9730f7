"""Minimal MQTT 3.1.1 wire helpers for the load generator and the null sink.

Deliberately independent of the gateway's codec (a benchmark must not measure a peer with
the code under test).  Only the packets a load generator needs are built: CONNECT, PUBLISH
(QoS 0/1), PINGREQ, DISCONNECT, SUBSCRIBE; the reader only splits a byte stream into
(first byte, body) frames.  Layout references are MQTT 3.1.1 §2.2 and §3.
"""

from __future__ import annotations

import struct

# Control packet types (MQTT 3.1.1 §2.2.1), already shifted into the high nibble.
CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82  # SUBSCRIBE requires flags 0b0010 (§3.8.1)
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0
TYPE_MASK = 0xF0
QOS1_FLAG = 0x02  # bits 2-1 of the PUBLISH fixed header = QoS (§3.3.1.2)

# CONNECT flags (§3.1.2.3)
USERNAME_FLAG = 0x80
PASSWORD_FLAG = 0x40
CLEAN_SESSION_FLAG = 0x02

PINGREQ_BYTES = bytes((PINGREQ, 0))
PINGRESP_BYTES = bytes((PINGRESP, 0))
DISCONNECT_BYTES = bytes((DISCONNECT, 0))
MAX_REMAINING_LENGTH = 268_435_455  # §2.2.3


def encode_remaining_length(n: int) -> bytes:
    """Variable-length integer of §2.2.3 (1 to 4 bytes)."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length out of range: {n}")
    out = bytearray()
    while True:
        digit = n % 128
        n //= 128
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _utf8(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def connect(
    client_id: str = "",
    *,
    username: str | None = None,
    password: str | None = None,
    keepalive: int = 600,
    clean: bool = True,
) -> bytes:
    """A CONNECT packet (protocol level 4).  `username=""` sends an empty username flag."""
    flags = CLEAN_SESSION_FLAG if clean else 0
    payload = _utf8(client_id)
    if username is not None:
        flags |= USERNAME_FLAG
        payload += _utf8(username)
    if password is not None:
        flags |= PASSWORD_FLAG
        payload += _utf8(password)
    var = _utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive)
    body = var + payload
    return bytes((CONNECT,)) + encode_remaining_length(len(body)) + body


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH packet; QoS 1 needs a packet id in 1..65535 (§2.3.1)."""
    if qos not in (0, 1):
        raise ValueError("only QoS 0 and 1 are generated")
    body = _utf8(topic)
    if qos:
        if not 1 <= packet_id <= 0xFFFF:
            raise ValueError(f"bad packet id {packet_id}")
        body += struct.pack("!H", packet_id)
    body += payload
    first = PUBLISH | (QOS1_FLAG if qos else 0)
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def subscribe(topic: str, *, packet_id: int = 1, qos: int = 0) -> bytes:
    """A SUBSCRIBE for one topic filter."""
    body = struct.pack("!H", packet_id) + _utf8(topic) + bytes((qos,))
    return bytes((SUBSCRIBE,)) + encode_remaining_length(len(body)) + body


def puback(packet_id: int) -> bytes:
    """PUBACK for `packet_id` (used by the null sink)."""
    return struct.pack("!BBH", PUBACK, 2, packet_id)


CONNACK_ACCEPTED = bytes((CONNACK, 2, 0, 0))


def split_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete frame from `buf`; return them as (first byte, body).

    A partial frame at the end stays in `buf` for the next call.  Raises ValueError on a
    malformed remaining length (more than 4 bytes).
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    n = len(buf)
    while pos + 2 <= n:
        first = buf[pos]
        length = 0
        shift = 0
        i = pos + 1
        complete = False
        while i < n:
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                complete = True
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed remaining length")
        if not complete:
            break
        end = i + length
        if end > n:
            break
        frames.append((first, bytes(buf[i:end])))
        pos = end
    del buf[:pos]
    return frames
