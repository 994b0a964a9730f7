"""MQTT 3.1.1 codec, sans-IO: the pure-Python twin of ``ext/mqtt_codec.pyx``.

Decoding walks an offset cursor over one growing ``bytearray``: ``receive_data`` appends,
``next_event``/``events`` parse complete packets from the cursor on and return
:mod:`gateway.mqtt.packets` Structs, or ``NEED_DATA`` when the buffer ends inside a packet.
The fixed header (type, flags, remaining length) is checked as soon as it is buffered, so a
packet over ``max_packet_size`` is refused before its body is waited for (mosquitto's check in
``packet__read``).

Contract shared with the compiled twin (``tests/twins`` holds them to it on random bytes):

* the same packets, in the same order, whatever the chunking of the input;
* the same exception class and message for every violation: :class:`MalformedPacket`,
  :class:`PacketTooLarge`, :class:`UnsupportedProtocol`, or plain
  :class:`ProtocolViolation` for sequencing errors (first packet not CONNECT, second
  CONNECT).  The cursor does not move past a bad packet, so after a violation every later
  call raises it again; the session must close the connection;
* ``events()`` returns the packets that precede a violation, and the next call raises it,
  so the good packets of a read can still be acted upon.

The decoder knows nothing of sessions beyond the CONNECT ordering rule; QoS 2 PUBLISH
decodes fine (the session refuses it).  Error messages name the spec clause.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import MalformedPacket, PacketTooLarge, ProtocolViolation, UnsupportedProtocol
from gateway.mqtt.packets import (
    DISCONNECT,
    NEED_DATA,
    PINGREQ,
    Connect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
)

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "NEED_DATA",
    "Decoder",
    "encode_connack",
    "encode_pingresp",
    "encode_puback",
    "encode_pubacks",
    "encode_pubcomp",
    "encode_publish",
    "encode_pubrec",
    "encode_pubrel",
    "encode_suback",
    "encode_unsuback",
    "packet_size",
]

# 256 KiB of payload plus room for a topic and the headers: the default per-connector cap.
DEFAULT_MAX_PACKET_SIZE = 256 * 1024 + 4096
# Largest value a 4-byte Remaining Length can hold (MQTT 3.1.1 §2.2.3).
MAX_REMAINING_LENGTH = 268_435_455

_NAMES = (
    "reserved",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "reserved",
)
# Fixed-header flags every packet type but PUBLISH must carry (MQTT-2.2.2-1/-2, table 2.2);
# -1 marks types a client never sends.
_FLAGS = (-1, 0, -1, -1, 0, 0, 2, 0, 2, -1, 2, -1, 0, -1, 0, -1)
_CONNECT = 1
_PUBLISH = 3
_PUBACK = 4
_PUBREC = 5
_PUBREL = 6
_PUBCOMP = 7
_SUBSCRIBE = 8
_UNSUBSCRIBE = 10
_PINGREQ = 12
_DISCONNECT = 14

_QOS_MASK = 0b0110  # PUBLISH fixed-header bits 1-2
_DUP_FLAG = 0b1000
_RETAIN_FLAG = 0b0001
# CONNECT flags (MQTT 3.1.1 §3.1.2.3)
_CF_RESERVED = 0x01
_CF_CLEAN_SESSION = 0x02
_CF_WILL = 0x04
_CF_WILL_QOS = 0x18
_CF_WILL_RETAIN = 0x20
_CF_PASSWORD = 0x40
_CF_USERNAME = 0x80
_PROTOCOLS = {("MQTT", 4), ("MQIsdp", 3)}


def packet_size(remaining_length: int) -> int:
    """Total bytes of a packet on the wire: ``1 + varint_len + remaining_length``.

    The one place this is computed; the decoder compares it with
    ``max_packet_size``.  Raises ``ValueError`` outside 0..``MAX_REMAINING_LENGTH``.
    """
    if remaining_length < 0 or remaining_length > MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {remaining_length} out of range")
    if remaining_length < 0x80:
        return 2 + remaining_length
    if remaining_length < 0x4000:
        return 3 + remaining_length
    if remaining_length < 0x200000:
        return 4 + remaining_length
    return 5 + remaining_length


class _Cursor:
    """Reads fields of one packet body ``buf[pos:stop]``; every read checks its bounds."""

    __slots__ = ("buf", "pos", "stop")

    def __init__(self, buf: bytearray, pos: int, stop: int) -> None:
        self.buf = buf
        self.pos = pos
        self.stop = stop

    def read_u8(self, what: str) -> int:
        if self.pos >= self.stop:
            raise MalformedPacket(f"{what} runs past the end of the packet")
        self.pos += 1
        return self.buf[self.pos - 1]

    def read_u16(self, what: str) -> int:
        pos = self.pos
        if self.stop - pos < 2:
            raise MalformedPacket(f"{what} runs past the end of the packet")
        self.pos = pos + 2
        return (self.buf[pos] << 8) | self.buf[pos + 1]

    def read_binary(self, what: str) -> bytes:
        n = self.read_u16(what)
        pos = self.pos
        if self.stop - pos < n:
            raise MalformedPacket(f"{what} runs past the end of the packet")
        self.pos = pos + n
        return bytes(self.buf[pos : pos + n])

    def read_utf8(self, what: str) -> str:
        raw = self.read_binary(what)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket(f"{what} is not valid UTF-8 (MQTT-1.5.3-1)") from None
        if "\x00" in text:
            raise MalformedPacket(f"{what} contains U+0000 (MQTT-1.5.3-2)")
        return text

    def read_topic(self, what: str) -> str:
        """A topic *name*: non-empty, no wildcards (MQTT-4.7.3-1, MQTT-3.3.2-2)."""
        topic = self.read_utf8(what)
        if not topic:
            raise MalformedPacket(f"{what} is empty (MQTT-4.7.3-1)")
        if "+" in topic or "#" in topic:
            raise MalformedPacket(f"{what} contains a wildcard + or # (MQTT-3.3.2-2)")
        return topic

    def read_filter(self, what: str) -> str:
        """A topic *filter*: non-empty, ``#`` only as the whole last level, ``+`` only as a
        whole level (MQTT-4.7.1-2, MQTT-4.7.1-3)."""
        topic = self.read_utf8(what)
        if not topic:
            raise MalformedPacket(f"{what} is empty (MQTT-4.7.3-1)")
        if "+" in topic or "#" in topic:
            levels = topic.split("/")
            last = len(levels) - 1
            for i, level in enumerate(levels):
                if ("#" in level and (level != "#" or i != last)) or (
                    "+" in level and level != "+"
                ):
                    raise MalformedPacket(
                        f"{what} has a misplaced wildcard (MQTT-4.7.1-2, MQTT-4.7.1-3)"
                    )
        return topic

    def read_packet_id(self, what: str) -> int:
        pid = self.read_u16(what)
        if pid == 0:
            raise MalformedPacket(f"{what} is 0 (MQTT-2.3.1-1)")
        return pid

    def expect_end(self, name: str) -> None:
        if self.pos != self.stop:
            raise MalformedPacket(f"{name} has {self.stop - self.pos} bytes after its last field")


class Decoder:
    """Incremental MQTT 3.1.1 decoder for the client-to-server direction.

    ``max_packet_size`` caps ``packet_size(remaining_length)``; a bigger packet raises
    :class:`PacketTooLarge` as soon as its fixed header is buffered.
    """

    __slots__ = ("_buf", "_connected", "_pos", "max_packet_size")

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2 bytes")
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._pos = 0
        self._connected = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet consumed by a decoded packet."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the stream.  ``b""`` (EOF) is a no-op here: the session
        decides what EOF means; the codec has no state that EOF could finish."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Packet | type[NEED_DATA]:
        """The next complete packet, or ``NEED_DATA``.  Raises ``ProtocolViolation``."""
        packet = self._next()
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        return packet

    def events(self) -> list[Packet]:
        """Every complete packet buffered, in order (the batch form of ``next_event``).

        If a violation follows some good packets, those are returned and the next call
        raises; if the violation comes first, it is raised now.
        """
        out: list[Packet] = []
        try:
            while (packet := self._next()) is not NEED_DATA:
                out.append(packet)  # type: ignore[arg-type]
        except ProtocolViolation:
            if not out:
                raise
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        return out

    def _next(self) -> Packet | type[NEED_DATA]:
        buf = self._buf
        end = len(buf)
        pos = self._pos
        if pos >= end:
            return NEED_DATA
        first = buf[pos]
        ptype = first >> 4
        flags = first & 0x0F
        name = _NAMES[ptype]
        expected = _FLAGS[ptype]
        if ptype == _PUBLISH:
            if flags & _QOS_MASK == _QOS_MASK:
                raise MalformedPacket("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
        elif expected < 0:
            if ptype == 0 or ptype == 15:
                raise MalformedPacket(f"reserved packet type {ptype}")
            raise MalformedPacket(f"{name} is sent by servers, not clients")
        elif flags != expected:
            raise MalformedPacket(
                f"{name} with reserved flags 0x{flags:x}, expected 0x{expected:x} (MQTT-2.2.2-2)"
            )
        if not self._connected:
            if ptype != _CONNECT:
                raise ProtocolViolation(f"the first packet must be CONNECT, got {name}")
        elif ptype == _CONNECT:
            raise ProtocolViolation("a second CONNECT on one connection (MQTT-3.1.0-2)")
        remaining = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= end:
                return NEED_DATA
            byte = buf[i]
            remaining |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            if shift == 21:
                raise MalformedPacket("remaining length longer than 4 bytes (MQTT 3.1.1 §2.2.3)")
            shift += 7
        size = packet_size(remaining)
        if size > self.max_packet_size:
            raise PacketTooLarge(
                f"{name} of {size} bytes exceeds the maximum packet size of "
                f"{self.max_packet_size} bytes"
            )
        stop = pos + size
        if stop > end:
            return NEED_DATA
        cur = _Cursor(buf, i, stop)
        packet: Packet
        if ptype == _PUBLISH:
            packet = _handle_publish(cur, flags)
        elif ptype == _PUBACK:
            packet = PubAck(_handle_ack(cur, name, remaining))
        elif ptype == _CONNECT:
            packet = _handle_connect(cur)
            self._connected = True
        elif ptype == _PUBREC:
            packet = PubRec(_handle_ack(cur, name, remaining))
        elif ptype == _PUBREL:
            packet = PubRel(_handle_ack(cur, name, remaining))
        elif ptype == _PUBCOMP:
            packet = PubComp(_handle_ack(cur, name, remaining))
        elif ptype == _SUBSCRIBE:
            packet = _handle_subscribe(cur)
        elif ptype == _UNSUBSCRIBE:
            packet = _handle_unsubscribe(cur)
        elif ptype == _PINGREQ:
            _handle_empty(name, remaining)
            packet = PINGREQ
        else:  # _DISCONNECT: every other type was refused in the fixed header
            _handle_empty(name, remaining)
            packet = DISCONNECT
        self._pos = stop
        return packet


def _handle_publish(cur: _Cursor, flags: int) -> Publish:
    qos = (flags & _QOS_MASK) >> 1
    topic = cur.read_topic("PUBLISH topic")
    pid = cur.read_packet_id("PUBLISH packet identifier") if qos else 0
    payload = bytes(cur.buf[cur.pos : cur.stop])
    return Publish(topic, payload, qos, bool(flags & _RETAIN_FLAG), bool(flags & _DUP_FLAG), pid)


def _handle_ack(cur: _Cursor, name: str, remaining: int) -> int:
    if remaining != 2:
        raise MalformedPacket(f"{name} remaining length is {remaining}, expected 2")
    return cur.read_packet_id(f"{name} packet identifier")


def _handle_empty(name: str, remaining: int) -> None:
    if remaining != 0:
        raise MalformedPacket(f"{name} remaining length is {remaining}, expected 0")


def _handle_connect(cur: _Cursor) -> Connect:
    proto = cur.read_utf8("CONNECT protocol name")
    level = cur.read_u8("CONNECT protocol level")
    if (proto, level) not in _PROTOCOLS:
        raise UnsupportedProtocol(
            f"protocol {proto!r} level {level} is neither MQTT 3.1.1 ('MQTT', 4) "
            "nor 3.1 ('MQIsdp', 3) (MQTT-3.1.2-2)"
        )
    cflags = cur.read_u8("CONNECT flags")
    if cflags & _CF_RESERVED:
        raise MalformedPacket("CONNECT reserved flag bit 0 is set (MQTT-3.1.2-3)")
    will_qos = (cflags & _CF_WILL_QOS) >> 3
    will = bool(cflags & _CF_WILL)
    if will_qos == 3:
        raise MalformedPacket("CONNECT will QoS 3 (MQTT-3.1.2-14)")
    if not will and (will_qos or cflags & _CF_WILL_RETAIN):
        raise MalformedPacket(
            "CONNECT will QoS or will retain set without the will flag (MQTT-3.1.2-13, -15)"
        )
    if cflags & _CF_PASSWORD and not cflags & _CF_USERNAME:
        raise MalformedPacket(
            "CONNECT password flag set without the user name flag (MQTT-3.1.2-22)"
        )
    keepalive = cur.read_u16("CONNECT keep alive")
    client_id = cur.read_utf8("CONNECT client identifier")
    will_topic: str | None = None
    will_payload: bytes | None = None
    if will:
        will_topic = cur.read_topic("CONNECT will topic")
        will_payload = cur.read_binary("CONNECT will message")
    username = cur.read_utf8("CONNECT user name") if cflags & _CF_USERNAME else None
    password = cur.read_binary("CONNECT password") if cflags & _CF_PASSWORD else None
    cur.expect_end("CONNECT")
    return Connect(
        client_id,
        username,
        password,
        keepalive,
        bool(cflags & _CF_CLEAN_SESSION),
        level,
        will_topic,
        will_payload,
        will_qos,
        bool(cflags & _CF_WILL_RETAIN),
    )


def _handle_subscribe(cur: _Cursor) -> Subscribe:
    pid = cur.read_packet_id("SUBSCRIBE packet identifier")
    if cur.pos == cur.stop:
        raise MalformedPacket("SUBSCRIBE without topic filters (MQTT-3.8.3-3)")
    topics: list[tuple[str, int]] = []
    while cur.pos < cur.stop:
        topic = cur.read_filter("SUBSCRIBE topic filter")
        qos = cur.read_u8("SUBSCRIBE requested QoS")
        if qos > 2:
            raise MalformedPacket(f"SUBSCRIBE requested QoS byte 0x{qos:02x} (MQTT-3.8.3-4)")
        topics.append((topic, qos))
    return Subscribe(pid, topics)


def _handle_unsubscribe(cur: _Cursor) -> Unsubscribe:
    pid = cur.read_packet_id("UNSUBSCRIBE packet identifier")
    if cur.pos == cur.stop:
        raise MalformedPacket("UNSUBSCRIBE without topic filters (MQTT-3.10.3-2)")
    topics: list[str] = []
    while cur.pos < cur.stop:
        topics.append(cur.read_filter("UNSUBSCRIBE topic filter"))
    return Unsubscribe(pid, topics)


# --- encoders: what the gateway sends -------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _check_pid(packet_id: int) -> None:
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier {packet_id} outside 1..65535")


def encode_connack(session_present: bool, return_code: int) -> bytes:
    """CONNACK (§3.2).  ``return_code`` is a :class:`~gateway.errors.ConnAckCode` value."""
    if not 0 <= return_code <= 255:
        raise ValueError(f"CONNACK return code {return_code} outside 0..255")
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """PUBLISH (§3.3).  ``packet_id`` must be 0 for QoS 0 and 1..65535 otherwise; raises
    ``ValueError`` for a topic over 65535 UTF-8 bytes or a packet over the MQTT maximum."""
    raw_topic = topic.encode("utf-8")
    if len(raw_topic) > 0xFFFF:
        raise ValueError("topic longer than 65535 bytes")
    if qos == 0:
        if packet_id:
            raise ValueError("packet identifier must be 0 for QoS 0")
    elif qos == 1 or qos == 2:
        _check_pid(packet_id)
    else:
        raise ValueError(f"QoS {qos} outside 0..2")
    remaining = 2 + len(raw_topic) + (2 if qos else 0) + len(payload)
    if remaining > MAX_REMAINING_LENGTH:
        raise ValueError("PUBLISH larger than the MQTT maximum packet size")
    first = 0x30 | (qos << 1) | (_DUP_FLAG if dup else 0) | (_RETAIN_FLAG if retain else 0)
    parts = [bytes((first,)), _varint(remaining), len(raw_topic).to_bytes(2, "big"), raw_topic]
    if qos:
        parts.append(packet_id.to_bytes(2, "big"))
    parts.append(bytes(payload))
    return b"".join(parts)


def _encode_ack(first: int, packet_id: int) -> bytes:
    _check_pid(packet_id)
    return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))


def encode_puback(packet_id: int) -> bytes:
    """PUBACK (§3.4)."""
    return _encode_ack(0x40, packet_id)


def encode_pubrec(packet_id: int) -> bytes:
    """PUBREC (§3.5)."""
    return _encode_ack(0x50, packet_id)


def encode_pubrel(packet_id: int) -> bytes:
    """PUBREL (§3.6); its fixed-header flags are 0b0010 (MQTT-3.6.1-1)."""
    return _encode_ack(0x62, packet_id)


def encode_pubcomp(packet_id: int) -> bytes:
    """PUBCOMP (§3.7)."""
    return _encode_ack(0x70, packet_id)


def encode_pubacks(packet_ids: Iterable[int]) -> bytes:
    """All PUBACKs of one read in one buffer, so that one ``send_all`` acknowledges them."""
    out = bytearray()
    for pid in packet_ids:
        _check_pid(pid)
        out += bytes((0x40, 2, pid >> 8, pid & 0xFF))
    return bytes(out)


def encode_suback(packet_id: int, codes: Iterable[int]) -> bytes:
    """SUBACK (§3.9): one return code per filter, each 0, 1, 2 or 0x80 (failure)."""
    _check_pid(packet_id)
    body = bytearray((packet_id >> 8, packet_id & 0xFF))
    for code in codes:
        if code not in (0, 1, 2, 0x80):
            raise ValueError(f"SUBACK return code {code} is not 0, 1, 2 or 0x80")
        body.append(code)
    if len(body) == 2:
        raise ValueError("SUBACK needs at least one return code")
    return bytes((0x90,)) + _varint(len(body)) + bytes(body)


def encode_unsuback(packet_id: int) -> bytes:
    """UNSUBACK (§3.11)."""
    return _encode_ack(0xB0, packet_id)


def encode_pingresp() -> bytes:
    """PINGRESP (§3.13)."""
    return b"\xd0\x00"
