# cython: language_level=3
"""MQTT 3.1.1 codec, sans-IO: the compiled twin of ``gateway/_pure/mqtt_codec.py``.

Read the pure twin's docstring for the contract; this module keeps it with C-level work in
the hot loop: one offset cursor (a C struct) over the receive ``bytearray``, ``cdef``
helpers ``_read_u16``/``_read_utf8``/... with explicit bounds checks (so the module can be
built with ``boundscheck=False``), one ``_handle_<packet>`` per packet type, and no Python
object per byte.  Packets are the Structs of :mod:`gateway.mqtt.packets`, errors the classes
of :mod:`gateway.errors`, with the same messages as the pure twin.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_Clear
from cpython.ref cimport Py_DECREF, PyObject
from libc.string cimport memchr, memcpy

from gateway.errors import (
    MalformedPacket,
    PacketTooLarge,
    ProtocolViolation,
    UnsupportedProtocol,
)
from gateway.mqtt.packets import (
    DISCONNECT,
    NEED_DATA,
    PINGREQ,
    Connect,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
)

cdef extern from "Python.h":
    # Declared with a raw return so that a decoding error is turned into MalformedPacket
    # without a try/except frame on the hot path.
    PyObject* _decode_utf8 "PyUnicode_DecodeUTF8"(
        const char* s, Py_ssize_t size, const char* errors
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

cdef Py_ssize_t _MAX_REMAINING = 268_435_455
cdef object _NEED_DATA = NEED_DATA
cdef object _PINGREQ = PINGREQ
cdef object _DISCONNECT = DISCONNECT

cdef tuple _NAMES = (
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

cdef enum:
    T_CONNECT = 1
    T_PUBLISH = 3
    T_PUBACK = 4
    T_PUBREC = 5
    T_PUBREL = 6
    T_PUBCOMP = 7
    T_SUBSCRIBE = 8
    T_UNSUBSCRIBE = 10
    T_PINGREQ = 12
    T_DISCONNECT = 14
    QOS_MASK = 0x06      # PUBLISH fixed-header bits 1-2
    DUP_FLAG = 0x08
    RETAIN_FLAG = 0x01
    CF_RESERVED = 0x01   # CONNECT flags, MQTT 3.1.1 §3.1.2.3
    CF_CLEAN_SESSION = 0x02
    CF_WILL = 0x04
    CF_WILL_QOS = 0x18
    CF_WILL_RETAIN = 0x20
    CF_PASSWORD = 0x40
    CF_USERNAME = 0x80


cdef inline int _expected_flags(int ptype) noexcept:
    """Fixed-header flags of each client packet type but PUBLISH (MQTT-2.2.2-1/-2);
    -1 for types a client never sends."""
    if ptype == T_CONNECT or ptype == T_PUBACK or ptype == T_PUBREC or ptype == T_PUBCOMP:
        return 0
    if ptype == T_PINGREQ or ptype == T_DISCONNECT:
        return 0
    if ptype == T_PUBREL or ptype == T_SUBSCRIBE or ptype == T_UNSUBSCRIBE:
        return 2
    return -1


cdef inline Py_ssize_t _packet_size(Py_ssize_t remaining) noexcept:
    if remaining < 0x80:
        return 2 + remaining
    if remaining < 0x4000:
        return 3 + remaining
    if remaining < 0x200000:
        return 4 + remaining
    return 5 + remaining


def packet_size(Py_ssize_t remaining_length):
    """Total bytes of a packet on the wire: ``1 + varint_len + remaining_length``."""
    if remaining_length < 0 or remaining_length > _MAX_REMAINING:
        raise ValueError(f"remaining length {remaining_length} out of range")
    return _packet_size(remaining_length)


# --- the cursor ------------------------------------------------------------------------------

cdef struct _Cursor:
    const unsigned char* buf
    Py_ssize_t pos
    Py_ssize_t stop


cdef int _runs_past(str what) except -1:
    raise MalformedPacket(f"{what} runs past the end of the packet")


cdef inline int _read_u8(_Cursor* c, str what) except -1:
    if c.pos >= c.stop:
        _runs_past(what)
    c.pos += 1
    return c.buf[c.pos - 1]


cdef inline int _read_u16(_Cursor* c, str what) except -1:
    cdef Py_ssize_t pos = c.pos
    if c.stop - pos < 2:
        _runs_past(what)
    c.pos = pos + 2
    return (c.buf[pos] << 8) | c.buf[pos + 1]


cdef bytes _read_binary(_Cursor* c, str what):
    cdef int n = _read_u16(c, what)
    cdef Py_ssize_t pos = c.pos
    if c.stop - pos < n:
        _runs_past(what)
    c.pos = pos + n
    return PyBytes_FromStringAndSize(<const char*>c.buf + pos, n)


cdef str _read_utf8(_Cursor* c, str what):
    cdef int n = _read_u16(c, what)
    cdef Py_ssize_t pos = c.pos
    cdef const char* start
    cdef PyObject* raw
    if c.stop - pos < n:
        _runs_past(what)
    start = <const char*>c.buf + pos
    c.pos = pos + n
    raw = _decode_utf8(start, n, NULL)
    if raw == NULL:
        PyErr_Clear()
        raise MalformedPacket(f"{what} is not valid UTF-8 (MQTT-1.5.3-1)")
    text = <object>raw
    Py_DECREF(text)
    # In strict UTF-8 the byte 0 only ever encodes U+0000.
    if n and memchr(start, 0, n) != NULL:
        raise MalformedPacket(f"{what} contains U+0000 (MQTT-1.5.3-2)")
    return text


cdef str _read_topic(_Cursor* c, str what):
    """A topic *name*: non-empty, no wildcards (MQTT-4.7.3-1, MQTT-3.3.2-2)."""
    cdef str topic = _read_utf8(c, what)
    if len(topic) == 0:
        raise MalformedPacket(f"{what} is empty (MQTT-4.7.3-1)")
    if "+" in topic or "#" in topic:
        raise MalformedPacket(f"{what} contains a wildcard + or # (MQTT-3.3.2-2)")
    return topic


cdef str _read_filter(_Cursor* c, str what):
    """A topic *filter*: ``#`` only as the whole last level, ``+`` only as a whole level."""
    cdef str topic = _read_utf8(c, what)
    cdef Py_ssize_t i, n = len(topic)
    cdef Py_UCS4 ch
    cdef Py_UCS4 prev
    cdef Py_UCS4 nxt
    if n == 0:
        raise MalformedPacket(f"{what} is empty (MQTT-4.7.3-1)")
    for i in range(n):
        ch = topic[i]
        if ch == 43 or ch == 35:  # '+' or '#'
            prev = topic[i - 1] if i > 0 else 47
            nxt = topic[i + 1] if i + 1 < n else 47
            if prev != 47 or nxt != 47 or (ch == 35 and i + 1 != n):
                raise MalformedPacket(
                    f"{what} has a misplaced wildcard (MQTT-4.7.1-2, MQTT-4.7.1-3)"
                )
    return topic


cdef inline int _read_packet_id(_Cursor* c, str what) except -1:
    cdef int pid = _read_u16(c, what)
    if pid == 0:
        raise MalformedPacket(f"{what} is 0 (MQTT-2.3.1-1)")
    return pid


# --- packet handlers -------------------------------------------------------------------------

cdef object _handle_publish(_Cursor* c, int flags):
    cdef int qos = (flags & QOS_MASK) >> 1
    cdef int pid = 0
    cdef str topic = _read_topic(c, "PUBLISH topic")
    if qos:
        pid = _read_packet_id(c, "PUBLISH packet identifier")
    payload = PyBytes_FromStringAndSize(<const char*>c.buf + c.pos, c.stop - c.pos)
    return Publish(topic, payload, qos, (flags & RETAIN_FLAG) != 0, (flags & DUP_FLAG) != 0, pid)


cdef int _handle_ack(_Cursor* c, int ptype, Py_ssize_t remaining) except -1:
    if remaining != 2:
        raise MalformedPacket(f"{_NAMES[ptype]} remaining length is {remaining}, expected 2")
    return _read_packet_id(c, f"{_NAMES[ptype]} packet identifier")


cdef int _handle_empty(int ptype, Py_ssize_t remaining) except -1:
    if remaining != 0:
        raise MalformedPacket(f"{_NAMES[ptype]} remaining length is {remaining}, expected 0")
    return 0


cdef object _handle_connect(_Cursor* c):
    cdef str proto = _read_utf8(c, "CONNECT protocol name")
    cdef int level = _read_u8(c, "CONNECT protocol level")
    cdef int cflags, will_qos, keepalive
    cdef bint will
    if not ((level == 4 and proto == "MQTT") or (level == 3 and proto == "MQIsdp")):
        raise UnsupportedProtocol(
            f"protocol {proto!r} level {level} is neither MQTT 3.1.1 ('MQTT', 4) "
            "nor 3.1 ('MQIsdp', 3) (MQTT-3.1.2-2)"
        )
    cflags = _read_u8(c, "CONNECT flags")
    if cflags & CF_RESERVED:
        raise MalformedPacket("CONNECT reserved flag bit 0 is set (MQTT-3.1.2-3)")
    will_qos = (cflags & CF_WILL_QOS) >> 3
    will = (cflags & CF_WILL) != 0
    if will_qos == 3:
        raise MalformedPacket("CONNECT will QoS 3 (MQTT-3.1.2-14)")
    if not will and (will_qos or cflags & CF_WILL_RETAIN):
        raise MalformedPacket(
            "CONNECT will QoS or will retain set without the will flag (MQTT-3.1.2-13, -15)"
        )
    if cflags & CF_PASSWORD and not cflags & CF_USERNAME:
        raise MalformedPacket(
            "CONNECT password flag set without the user name flag (MQTT-3.1.2-22)"
        )
    keepalive = _read_u16(c, "CONNECT keep alive")
    client_id = _read_utf8(c, "CONNECT client identifier")
    will_topic = None
    will_payload = None
    if will:
        will_topic = _read_topic(c, "CONNECT will topic")
        will_payload = _read_binary(c, "CONNECT will message")
    username = _read_utf8(c, "CONNECT user name") if cflags & CF_USERNAME else None
    password = _read_binary(c, "CONNECT password") if cflags & CF_PASSWORD else None
    if c.pos != c.stop:
        raise MalformedPacket(f"CONNECT has {c.stop - c.pos} bytes after its last field")
    return Connect(
        client_id,
        username,
        password,
        keepalive,
        (cflags & CF_CLEAN_SESSION) != 0,
        level,
        will_topic,
        will_payload,
        will_qos,
        (cflags & CF_WILL_RETAIN) != 0,
    )


cdef object _handle_subscribe(_Cursor* c):
    cdef int pid = _read_packet_id(c, "SUBSCRIBE packet identifier")
    cdef int qos
    cdef list topics = []
    if c.pos == c.stop:
        raise MalformedPacket("SUBSCRIBE without topic filters (MQTT-3.8.3-3)")
    while c.pos < c.stop:
        topic = _read_filter(c, "SUBSCRIBE topic filter")
        qos = _read_u8(c, "SUBSCRIBE requested QoS")
        if qos > 2:
            raise MalformedPacket(f"SUBSCRIBE requested QoS byte 0x{qos:02x} (MQTT-3.8.3-4)")
        topics.append((topic, qos))
    return Subscribe(pid, topics)


cdef object _handle_unsubscribe(_Cursor* c):
    cdef int pid = _read_packet_id(c, "UNSUBSCRIBE packet identifier")
    cdef list topics = []
    if c.pos == c.stop:
        raise MalformedPacket("UNSUBSCRIBE without topic filters (MQTT-3.10.3-2)")
    while c.pos < c.stop:
        topics.append(_read_filter(c, "UNSUBSCRIBE topic filter"))
    return Unsubscribe(pid, topics)


# --- the decoder -----------------------------------------------------------------------------

cdef class Decoder:
    """Incremental MQTT 3.1.1 decoder for the client-to-server direction.

    ``max_packet_size`` caps ``packet_size(remaining_length)``; a bigger packet raises
    :class:`PacketTooLarge` as soon as its fixed header is buffered.
    """

    cdef bytearray _buf
    cdef Py_ssize_t _pos
    cdef bint _connected
    cdef readonly Py_ssize_t max_packet_size

    def __init__(self, Py_ssize_t max_packet_size=DEFAULT_MAX_PACKET_SIZE):
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2 bytes")
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._pos = 0
        self._connected = False

    @property
    def buffered_bytes(self):
        """Bytes received and not yet consumed by a decoded packet."""
        return PyByteArray_GET_SIZE(self._buf) - self._pos

    def receive_data(self, data):
        """Append bytes read from the stream; ``b""`` (EOF) is a no-op for the codec."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self):
        """The next complete packet, or ``NEED_DATA``.  Raises ``ProtocolViolation``."""
        packet = self._next()
        if self._pos and self._pos == PyByteArray_GET_SIZE(self._buf):
            self._buf.clear()
            self._pos = 0
        return packet

    def events(self):
        """Every complete packet buffered, in order; see the pure twin for the contract."""
        cdef list out = []
        try:
            while True:
                packet = self._next()
                if packet is _NEED_DATA:
                    break
                out.append(packet)
        except ProtocolViolation:
            if not out:
                raise
        if self._pos and self._pos == PyByteArray_GET_SIZE(self._buf):
            self._buf.clear()
            self._pos = 0
        return out

    cdef object _next(self):
        cdef const unsigned char* buf = <const unsigned char*>PyByteArray_AS_STRING(self._buf)
        cdef Py_ssize_t end = PyByteArray_GET_SIZE(self._buf)
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t i, remaining, size, stop
        cdef int first, ptype, flags, expected, shift, byte
        cdef _Cursor cur
        if pos >= end:
            return _NEED_DATA
        first = buf[pos]
        ptype = first >> 4
        flags = first & 0x0F
        if ptype == T_PUBLISH:
            if flags & QOS_MASK == QOS_MASK:
                raise MalformedPacket("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
        else:
            expected = _expected_flags(ptype)
            if expected < 0:
                if ptype == 0 or ptype == 15:
                    raise MalformedPacket(f"reserved packet type {ptype}")
                raise MalformedPacket(f"{_NAMES[ptype]} is sent by servers, not clients")
            if flags != expected:
                raise MalformedPacket(
                    f"{_NAMES[ptype]} with reserved flags 0x{flags:x}, "
                    f"expected 0x{expected:x} (MQTT-2.2.2-2)"
                )
        if not self._connected:
            if ptype != T_CONNECT:
                raise ProtocolViolation(f"the first packet must be CONNECT, got {_NAMES[ptype]}")
        elif ptype == T_CONNECT:
            raise ProtocolViolation("a second CONNECT on one connection (MQTT-3.1.0-2)")
        remaining = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= end:
                return _NEED_DATA
            byte = buf[i]
            remaining |= (<Py_ssize_t>(byte & 0x7F)) << shift
            i += 1
            if not byte & 0x80:
                break
            if shift == 21:
                raise MalformedPacket("remaining length longer than 4 bytes (MQTT 3.1.1 §2.2.3)")
            shift += 7
        size = _packet_size(remaining)
        if size > self.max_packet_size:
            raise PacketTooLarge(
                f"{_NAMES[ptype]} of {size} bytes exceeds the maximum packet size of "
                f"{self.max_packet_size} bytes"
            )
        stop = pos + size
        if stop > end:
            return _NEED_DATA
        cur.buf = buf
        cur.pos = i
        cur.stop = stop
        if ptype == T_PUBLISH:
            packet = _handle_publish(&cur, flags)
        elif ptype == T_PUBACK:
            packet = PubAck(_handle_ack(&cur, ptype, remaining))
        elif ptype == T_CONNECT:
            packet = _handle_connect(&cur)
            self._connected = True
        elif ptype == T_PUBREC:
            packet = PubRec(_handle_ack(&cur, ptype, remaining))
        elif ptype == T_PUBREL:
            packet = PubRel(_handle_ack(&cur, ptype, remaining))
        elif ptype == T_PUBCOMP:
            packet = PubComp(_handle_ack(&cur, ptype, remaining))
        elif ptype == T_SUBSCRIBE:
            packet = _handle_subscribe(&cur)
        elif ptype == T_UNSUBSCRIBE:
            packet = _handle_unsubscribe(&cur)
        elif ptype == T_PINGREQ:
            _handle_empty(ptype, remaining)
            packet = _PINGREQ
        else:  # DISCONNECT: every other type was refused in the fixed header
            _handle_empty(ptype, remaining)
            packet = _DISCONNECT
        self._pos = stop
        return packet


# --- encoders --------------------------------------------------------------------------------

cdef inline Py_ssize_t _put_varint(char* out, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i = 0
    cdef int byte
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out[i] = <char>(byte | 0x80)
            i += 1
        else:
            out[i] = <char>byte
            return i + 1


cdef int _check_pid(long packet_id) except -1:
    if packet_id <= 0 or packet_id > 0xFFFF:
        raise ValueError(f"packet identifier {packet_id} outside 1..65535")
    return 0


def encode_connack(bint session_present, int return_code):
    """CONNACK (§3.2).  ``return_code`` is a :class:`~gateway.errors.ConnAckCode` value."""
    if return_code < 0 or return_code > 255:
        raise ValueError(f"CONNACK return code {return_code} outside 0..255")
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def encode_publish(
    str topic, payload, int qos=0, long packet_id=0, bint retain=False, bint dup=False
):
    """PUBLISH (§3.3).  ``packet_id`` must be 0 for QoS 0 and 1..65535 otherwise."""
    cdef bytes raw_topic = topic.encode("utf-8")
    cdef bytes body = payload if type(payload) is bytes else bytes(payload)
    cdef Py_ssize_t tlen = len(raw_topic)
    cdef Py_ssize_t plen = len(body)
    cdef Py_ssize_t remaining, total, i
    cdef char header[5]
    cdef Py_ssize_t hlen
    cdef char* out
    if tlen > 0xFFFF:
        raise ValueError("topic longer than 65535 bytes")
    if qos == 0:
        if packet_id:
            raise ValueError("packet identifier must be 0 for QoS 0")
    elif qos == 1 or qos == 2:
        _check_pid(packet_id)
    else:
        raise ValueError(f"QoS {qos} outside 0..2")
    remaining = 2 + tlen + (2 if qos else 0) + plen
    if remaining > _MAX_REMAINING:
        raise ValueError("PUBLISH larger than the MQTT maximum packet size")
    header[0] = <char>(
        0x30 | (qos << 1) | (DUP_FLAG if dup else 0) | (RETAIN_FLAG if retain else 0)
    )
    hlen = 1 + _put_varint(header + 1, remaining)
    total = hlen + remaining
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    memcpy(out, header, hlen)
    i = hlen
    out[i] = <char>(tlen >> 8)
    out[i + 1] = <char>(tlen & 0xFF)
    i += 2
    if tlen:
        memcpy(out + i, PyBytes_AS_STRING(raw_topic), tlen)
    i += tlen
    if qos:
        out[i] = <char>(packet_id >> 8)
        out[i + 1] = <char>(packet_id & 0xFF)
        i += 2
    if plen:
        memcpy(out + i, PyBytes_AS_STRING(body), plen)
    return result


cdef bytes _encode_ack(int first, long packet_id):
    cdef char out[4]
    _check_pid(packet_id)
    out[0] = <char>first
    out[1] = 2
    out[2] = <char>(packet_id >> 8)
    out[3] = <char>(packet_id & 0xFF)
    return PyBytes_FromStringAndSize(out, 4)


def encode_puback(long packet_id):
    """PUBACK (§3.4)."""
    return _encode_ack(0x40, packet_id)


def encode_pubrec(long packet_id):
    """PUBREC (§3.5)."""
    return _encode_ack(0x50, packet_id)


def encode_pubrel(long packet_id):
    """PUBREL (§3.6); its fixed-header flags are 0b0010 (MQTT-3.6.1-1)."""
    return _encode_ack(0x62, packet_id)


def encode_pubcomp(long packet_id):
    """PUBCOMP (§3.7)."""
    return _encode_ack(0x70, packet_id)


def encode_pubacks(packet_ids):
    """All PUBACKs of one read in one buffer, so that one ``send_all`` acknowledges them."""
    cdef list pids = packet_ids if type(packet_ids) is list else list(packet_ids)
    cdef Py_ssize_t n = len(pids)
    cdef Py_ssize_t k
    cdef long pid
    cdef char* out
    result = PyBytes_FromStringAndSize(NULL, 4 * n)
    out = PyBytes_AS_STRING(result)
    for k in range(n):
        pid = pids[k]
        _check_pid(pid)
        out[4 * k] = <char>0x40
        out[4 * k + 1] = 2
        out[4 * k + 2] = <char>(pid >> 8)
        out[4 * k + 3] = <char>(pid & 0xFF)
    return result


def encode_suback(long packet_id, codes):
    """SUBACK (§3.9): one return code per filter, each 0, 1, 2 or 0x80 (failure)."""
    cdef bytearray body
    cdef char header[5]
    cdef Py_ssize_t hlen
    _check_pid(packet_id)
    body = bytearray((packet_id >> 8, packet_id & 0xFF))
    for code in codes:
        if code not in (0, 1, 2, 0x80):
            raise ValueError(f"SUBACK return code {code} is not 0, 1, 2 or 0x80")
        body.append(code)
    if len(body) == 2:
        raise ValueError("SUBACK needs at least one return code")
    header[0] = <char>0x90
    hlen = 1 + _put_varint(header + 1, len(body))
    return PyBytes_FromStringAndSize(header, hlen) + bytes(body)


def encode_unsuback(long packet_id):
    """UNSUBACK (§3.11)."""
    return _encode_ack(0xB0, packet_id)


def encode_pingresp():
    """PINGRESP (§3.13)."""
    return b"\xd0\x00"
