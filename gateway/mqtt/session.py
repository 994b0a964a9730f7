"""One MQTT 3.1.1 server-side session, sans-IO: bytes and decisions in, bytes and events out.

Theory of operation
-------------------
A :class:`Session` owns the decoder for one connection and the bytes queued for it; it knows
nothing of sockets, clocks, the store or the services.  The I/O layer
(:mod:`gateway.device.mqtt.connection`) drives it with the same verbs as h11:

* ``receive_data(data, now)`` feeds what the stream returned (``b""`` is EOF); ``now`` is the
  I/O layer's clock (trio's, seconds) and only ever used to compute deadlines;
* ``events()`` returns everything the buffered bytes mean, in order, as the packets that
  need a decision (:class:`~gateway.mqtt.packets.Connect`,
  :class:`~gateway.mqtt.packets.Publish`, :class:`~gateway.mqtt.packets.Subscribe`) and, at
  most once and always last, a :class:`Closed` event saying why the session ended;
  a :class:`~gateway.mqtt.packets.Connect` is always the last event of its batch (see
  "Before CONNACK" below);
* ``accept()`` / ``refuse(code)`` answer the CONNECT, ``ack(packet_ids)`` queues the PUBACKs
  of publishes whose writes have committed, ``publish(topic, payload)`` queues a
  server-to-device message; ``data_to_send()`` hands the queued bytes over;
* ``deadline`` is the (I/O-clock) time at which the connection must be closed for
  ``idle_timeout`` unless a packet arrives first.

What the session decides by itself, because the spec leaves no choice:

* PINGREQ → PINGRESP; UNSUBSCRIBE → UNSUBACK; SUBSCRIBE → SUBACK granting min(QoS, 1)
  (docs/protocol.md §12 item 6); the SUBSCRIBE is still returned as an event so the I/O layer can
  re-send pending values.  A client PUBACK is ignored (the gateway publishes at QoS 0).
* PUBLISH QoS 2, PUBREC/PUBREL/PUBCOMP: QoS 2 is not supported (docs/protocol.md §3.1, §10
  item 10), the session ends with reason ``qos2_not_supported``.
* DISCONNECT ends the session cleanly (the will is discarded, MQTT-3.14.4-3); EOF and any
  :class:`~gateway.errors.ProtocolViolation` of the decoder end it uncleanly with the
  violation's ``reason`` (an unsupported protocol level is first answered with CONNACK 1,
  MQTT-3.1.2-2).  MQTT 3.1.1 has no DISCONNECT from the server, so "ending" means
  the I/O layer closes the network connection (MQTT-4.8.0-1).
* Keep-alive (docs/protocol.md §12 item 8): until CONNECT arrives the deadline is
  ``connect_timeout_s`` after the session started; afterwards it is 1.5 × the CONNECT's
  keep-alive after the last complete packet (MQTT-3.1.2-24), or ``idle_timeout_s`` when the
  client asked for keep-alive 0.

Before CONNACK (docs/decisions.md, "MQTT before CONNACK"): a client may send packets right
after its CONNECT without waiting for the CONNACK (MQTT 3.1.1 §3.1.4; firmware on slow links
writes CONNECT, PUBLISH and DISCONNECT at once).  ``events()`` therefore stops at the CONNECT:
packets decoded behind it are *held*, unanswered, and ``events()`` returns nothing more until
the I/O layer has decided.  After ``accept()`` the next ``events()`` call answers and returns
them in order, so every reply (PINGRESP, SUBACK, PUBACK) follows the CONNACK; after
``refuse()`` they are discarded unanswered (MQTT-3.1.4-5: the server must not process data
sent after a rejected CONNECT).  A violation behind the CONNECT is likewise seen only after
the decision, and ends the session then.

Bounded memory: the decoder refuses a packet over ``max_packet_size`` as soon as its fixed
header is buffered, so the input buffer never holds more than one packet plus one read; the
output side is measured by :attr:`Session.bytes_to_send` and the I/O layer stops reading
(and drops a client that does not read its pushes) above its limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TypeAlias

import msgspec

from gateway.errors import ConnAckCode, ProtocolViolation, UnsupportedProtocol
from gateway.mqtt.codec import (
    DEFAULT_MAX_PACKET_SIZE,
    Decoder,
    encode_connack,
    encode_pingresp,
    encode_pubacks,
    encode_publish,
    encode_suback,
    encode_unsuback,
)
from gateway.mqtt.packets import (
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
    Unsubscribe,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "IDLE_TIMEOUT_S",
    "KEEPALIVE_FACTOR",
    "Closed",
    "Event",
    "Session",
    "SessionState",
]

CONNECT_TIMEOUT_S = 5.0  # CONNECT must arrive this soon after the (TLS) connection opened
IDLE_TIMEOUT_S = 300.0  # the idle limit when the client asks for keep-alive 0
KEEPALIVE_FACTOR = 1.5  # MQTT-3.1.2-24: one and a half keep-alive periods of silence


class SessionState(Enum):
    """Where the session is.  Transitions only go down this list (or straight to CLOSED)."""

    AWAIT_CONNECT = "await_connect"  # nothing decoded yet
    AUTHENTICATING = "authenticating"  # CONNECT returned as an event, no CONNACK yet
    CONNECTED = "connected"  # CONNACK 0 queued
    CLOSED = "closed"  # ended; the I/O layer must close the connection


class Closed(msgspec.Struct, frozen=True, gc=False):
    """The session ended.  ``clean`` is True only for a client DISCONNECT (discard the will);
    ``reason`` uses docs/protocol.md §12 item 24's vocabulary or the violation's reason."""

    reason: str
    detail: str
    clean: bool = False


Event: TypeAlias = Connect | Publish | Subscribe | Closed
"""What ``events()`` returns: packets that need the I/O layer's decision, or the end."""

_CLIENT_DISCONNECT = "client_disconnect"
_PEER_CLOSED = "peer_closed"
_QOS2 = "qos2_not_supported"


class Session:
    """The state machine of one connection; see the module docstring.

    Limits are constructor parameters: ``max_packet_size`` (bytes, per packet, as the
    decoder counts it), ``connect_timeout_s`` and ``idle_timeout_s`` (seconds).  ``now`` is
    the I/O layer's clock at the moment the connection opened.
    """

    __slots__ = (
        "_closed",
        "_deadline",
        "_decoder",
        "_held",
        "_keepalive_s",
        "_now",
        "_out",
        "idle_timeout_s",
        "inflight",
        "keepalive",
        "packets_in",
        "packets_out",
        "state",
        "will",
    )

    def __init__(
        self,
        *,
        now: float,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._decoder = Decoder(max_packet_size)
        self._out = bytearray()
        self._deadline = now + connect_timeout_s
        self._keepalive_s = 0.0
        self._now = now
        self._closed: Closed | None = None
        self._held: list[Packet] | None = None  # decoded behind a CONNECT not yet answered
        self.idle_timeout_s = idle_timeout_s
        self.state = SessionState.AWAIT_CONNECT
        self.keepalive = 0  # seconds, as the CONNECT asked
        self.inflight = 0  # QoS 1 publishes returned as events and not yet acknowledged
        self.will: Publish | None = None  # the CONNECT's will, as a QoS 0 publish
        # Running totals for metrics (the I/O layer reports their growth once per read or
        # send): complete packets decoded, and packets queued for the client.
        self.packets_in = 0
        self.packets_out = 0

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the stream; ``b""`` means the peer closed (EOF).

        Deadlines move only when a complete packet has been decoded (in :meth:`events`), so
        a client trickling one byte at a time cannot keep an idle connection open.
        """
        if self.state is SessionState.CLOSED:
            return
        if not data:
            if self._closed is None:
                self._closed = Closed(_PEER_CLOSED, "the client closed the connection")
            return
        self._decoder.receive_data(data)
        self._now = now

    def events(self) -> list[Event]:
        """Everything the buffered bytes mean, in order; see the module docstring.

        Never raises for peer input: a protocol violation becomes the final :class:`Closed`
        event (after the packets that preceded it), and the session stops decoding.  While a
        CONNECT awaits ``accept()``/``refuse()`` nothing more is returned (the packets behind
        it are held; see "Before CONNACK" in the module docstring).
        """
        out: list[Event] = []
        if self.state is SessionState.CLOSED:
            return out
        while self._closed is None and self.state is not SessionState.AUTHENTICATING:
            packets = self._held
            if packets is not None:
                self._held = None
            else:
                try:
                    packets = self._decoder.events()
                except ProtocolViolation as exc:
                    self._closed = Closed(exc.reason, str(exc))
                    if isinstance(exc, UnsupportedProtocol):
                        # MQTT-3.1.2-2: answer an unsupported level with CONNACK 1, then close
                        self._out += encode_connack(
                            False, ConnAckCode.UNACCEPTABLE_PROTOCOL_VERSION
                        )
                        self.packets_out += 1
                    break
                if not packets:
                    break
                self.packets_in += len(packets)
                self._touch()
            self._take(packets, out)
        if self._closed is not None:
            self.state = SessionState.CLOSED
            out.append(self._closed)
        return out

    def _take(self, packets: list[Packet], out: list[Event]) -> None:
        """Answer what the session answers by itself; append the rest to ``out``.  Stops
        after a CONNECT: what follows it is held until the CONNECT is answered."""
        for i, packet in enumerate(packets):
            t = type(packet)
            if t is Publish:
                assert isinstance(packet, Publish)
                if packet.qos == 2:
                    self._closed = Closed(_QOS2, "PUBLISH with QoS 2 is not supported")
                    return
                if packet.qos == 1:
                    self.inflight += 1
                out.append(packet)
            elif t is PingReq:
                self._out += encode_pingresp()
                self.packets_out += 1
            elif t is Subscribe:
                assert isinstance(packet, Subscribe)
                self._out += encode_suback(packet.packet_id, [min(q, 1) for _, q in packet.topics])
                self.packets_out += 1
                out.append(packet)
            elif t is Unsubscribe:
                assert isinstance(packet, Unsubscribe)
                self._out += encode_unsuback(packet.packet_id)
                self.packets_out += 1
            elif t is Connect:
                assert isinstance(packet, Connect)
                self._on_connect(packet)
                out.append(packet)
                if i + 1 < len(packets):
                    self._held = packets[i + 1 :]
                return
            elif t is Disconnect:
                self._closed = Closed(_CLIENT_DISCONNECT, "DISCONNECT", clean=True)
                self.will = None
                return
            elif t is PubAck:
                continue  # the gateway publishes at QoS 0; a stray PUBACK means nothing
            else:  # PUBREC, PUBREL, PUBCOMP: the QoS 2 flows
                self._closed = Closed(_QOS2, f"{t.__name__} (QoS 2 flow) is not supported")
                return

    def _on_connect(self, packet: Connect) -> None:
        self.state = SessionState.AUTHENTICATING
        self.keepalive = packet.keepalive
        self._keepalive_s = (
            packet.keepalive * KEEPALIVE_FACTOR if packet.keepalive else self.idle_timeout_s
        )
        self._deadline = self._now + self._keepalive_s
        if packet.will_topic is not None:
            # Will QoS is delivered at 0 only and RETAIN ignored
            # (docs/protocol.md §3.1, §12 item 25).
            self.will = Publish(packet.will_topic, packet.will_payload or b"", 0, False, False, 0)

    def _touch(self) -> None:
        if self.state is not SessionState.AWAIT_CONNECT:
            self._deadline = self._now + self._keepalive_s

    @property
    def deadline(self) -> float:
        """When (I/O clock) to give up on a silent client: ``idle_timeout``."""
        return self._deadline

    # -- decisions -------------------------------------------------------------------------

    def accept(self) -> None:
        """Answer the CONNECT with CONNACK 0 (no session state is ever kept: docs/protocol.md
        §3.1 says Clean Session behaves as 0 for pushes, which live in the store)."""
        if self.state is not SessionState.AUTHENTICATING:
            raise RuntimeError(f"accept() in state {self.state.value}")
        self.state = SessionState.CONNECTED
        self._out += encode_connack(False, ConnAckCode.ACCEPTED)
        self.packets_out += 1

    def refuse(self, code: ConnAckCode, reason: str, detail: str) -> Closed:
        """Answer the CONNECT with a refusal code and end the session (MQTT-3.2.2-5); the
        packets held behind the CONNECT are discarded unanswered (MQTT-3.1.4-5)."""
        if self.state is not SessionState.AUTHENTICATING:
            raise RuntimeError(f"refuse() in state {self.state.value}")
        self._held = None
        self._out += encode_connack(False, code)
        self.packets_out += 1
        return self.close(reason, detail)

    def close(self, reason: str, detail: str) -> Closed:
        """End the session for a reason found outside the bytes (idle timeout, kick, a
        refused provisioning...).  Idempotent: the first reason wins."""
        if self._closed is None:
            self._closed = Closed(reason, detail)
        self.state = SessionState.CLOSED
        self._held = None
        return self._closed

    @property
    def closed(self) -> Closed | None:
        """Why the session ended, once it has."""
        return self._closed

    # -- output ----------------------------------------------------------------------------

    def ack(self, packet_ids: Iterable[int]) -> None:
        """Queue the PUBACKs of committed QoS 1 publishes, in the order received
        (MQTT-4.6.0-2); one buffer for all of them."""
        ids = list(packet_ids)
        if ids:
            self.inflight -= len(ids)
            self.packets_out += len(ids)
            self._out += encode_pubacks(ids)

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 0, non-retained PUBLISH to the client (docs/protocol.md §12 items 1, 5)."""
        self._out += encode_publish(topic, payload)
        self.packets_out += 1

    @property
    def bytes_to_send(self) -> int:
        return len(self._out)

    def data_to_send(self) -> bytes:
        """Everything queued so far (possibly ``b""``); the caller sends it in one write."""
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet decoded into a packet."""
        return int(self._decoder.buffered_bytes)
