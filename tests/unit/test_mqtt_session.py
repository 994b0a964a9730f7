"""gateway.mqtt.session: the sans-IO MQTT session, driven with hand-built bytes and a fake clock
value (no sockets, no trio).  Expected bytes come from gateway.testing.mqtt_bytes."""

from __future__ import annotations

import pytest

from gateway.errors import ConnAckCode
from gateway.mqtt.packets import Connect, Publish, Subscribe
from gateway.mqtt.session import Closed, Session, SessionState
from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_disconnect,
    gen_pingreq,
    gen_pingresp,
    gen_puback,
    gen_publish,
    gen_pubrel,
    gen_suback,
    gen_subscribe,
    gen_unsuback,
    gen_unsubscribe,
)


def connected(keepalive: int = 60, now: float = 100.0, **kw: object) -> Session:
    s = Session(now=now, **kw)  # type: ignore[arg-type]
    s.receive_data(gen_connect("c", keepalive=keepalive, username="", password="tok"), now)
    (ev,) = s.events()
    assert isinstance(ev, Connect)
    s.accept()
    assert s.data_to_send() == gen_connack(0)
    return s


def test_connect_event_then_accept_sends_connack_0() -> None:
    s = Session(now=0.0)
    assert s.state is SessionState.AWAIT_CONNECT
    s.receive_data(gen_connect("any-id", username="", password="secret"), 1.0)
    (ev,) = s.events()
    assert isinstance(ev, Connect)
    assert (ev.client_id, ev.username, ev.password) == ("any-id", "", b"secret")
    assert s.state is SessionState.AUTHENTICATING
    assert s.data_to_send() == b""  # nothing before the decision
    s.accept()
    assert s.state is SessionState.CONNECTED
    assert s.data_to_send() == gen_connack(0)


@pytest.mark.parametrize("code", [ConnAckCode.BAD_USERNAME_OR_PASSWORD, ConnAckCode.NOT_AUTHORIZED])
def test_refuse_sends_code_and_closes(code: ConnAckCode) -> None:
    s = Session(now=0.0)
    s.receive_data(gen_connect(password="x", username=""), 0.0)
    s.events()
    closed = s.refuse(code, "not_authenticated", "bad token")
    assert s.data_to_send() == gen_connack(int(code))
    assert s.state is SessionState.CLOSED
    assert closed.reason == "not_authenticated"
    s.receive_data(gen_pingreq(), 1.0)  # ignored after the end
    assert s.events() == []


def test_mqtt31_is_tolerated() -> None:
    s = Session(now=0.0)
    s.receive_data(gen_connect("c", proto_name=b"MQIsdp", proto_ver=3), 0.0)
    (ev,) = s.events()
    assert isinstance(ev, Connect)
    assert ev.protocol_level == 3


def test_unsupported_level_gets_connack_1_then_close() -> None:
    s = Session(now=0.0)
    s.receive_data(gen_connect("c", proto_ver=5), 0.0)
    (ev,) = s.events()
    assert isinstance(ev, Closed)
    assert ev.reason == "unsupported_protocol_version"
    assert s.data_to_send() == gen_connack(1)


def test_first_packet_not_connect_is_a_violation() -> None:
    s = Session(now=0.0)
    s.receive_data(gen_pingreq(), 0.0)
    (ev,) = s.events()
    assert isinstance(ev, Closed)
    assert ev.reason == "protocol_error"
    assert not ev.clean
    assert s.data_to_send() == b""


def test_connect_deadline_then_keepalive_deadline() -> None:
    s = Session(now=10.0, connect_timeout_s=5.0)
    assert s.deadline == 15.0
    s.receive_data(gen_connect("c", keepalive=20), 12.0)
    s.events()
    assert s.deadline == 12.0 + 30.0  # 1.5 x keep-alive
    s.accept()
    assert s.data_to_send() == gen_connack(0)
    s.receive_data(gen_pingreq(), 40.0)
    s.events()
    assert s.deadline == 40.0 + 30.0
    assert s.data_to_send() == gen_pingresp()


def test_partial_packets_do_not_move_the_deadline() -> None:
    s = connected(keepalive=10, now=0.0)
    ping = gen_pingreq()
    s.receive_data(ping[:1], 14.0)
    assert s.events() == []
    assert s.deadline == 15.0
    s.receive_data(ping[1:], 14.5)
    assert s.events() == []
    assert s.deadline == 14.5 + 15.0


def test_keepalive_zero_uses_idle_timeout() -> None:
    s = Session(now=0.0, idle_timeout_s=300.0)
    s.receive_data(gen_connect("c", keepalive=0), 1.0)
    s.events()
    assert s.deadline == 301.0


def test_publish_qos1_counts_inflight_and_pubacks_are_coalesced() -> None:
    s = connected()
    data = b"".join(gen_publish("$resource/a", str(i), qos=1, mid=i + 1) for i in range(3))
    s.receive_data(data + gen_publish("$resource/a", "q0"), 101.0)
    events = s.events()
    assert [type(e) for e in events] == [Publish] * 4
    assert [e.packet_id for e in events if isinstance(e, Publish)] == [1, 2, 3, 0]
    assert s.inflight == 3
    assert s.data_to_send() == b""  # no PUBACK before the I/O layer says committed
    s.ack([1, 2, 3])
    assert s.inflight == 0
    assert s.data_to_send() == gen_puback(1) + gen_puback(2) + gen_puback(3)


def test_publish_split_across_reads() -> None:
    s = connected()
    data = gen_publish("$resource/a", b"x" * 300, qos=1, mid=7)
    for i in range(len(data) - 1):
        s.receive_data(data[i : i + 1], 101.0)
        assert s.events() == []
    s.receive_data(data[-1:], 101.0)
    (ev,) = s.events()
    assert isinstance(ev, Publish)
    assert ev.payload == b"x" * 300


def test_qos2_publish_closes() -> None:
    s = connected()
    s.receive_data(gen_publish("$resource/a", "v", qos=2, mid=1), 101.0)
    (ev,) = s.events()
    assert isinstance(ev, Closed)
    assert ev.reason == "qos2_not_supported"


def test_pubrel_closes() -> None:
    s = connected()
    s.receive_data(gen_pubrel(3), 101.0)
    (ev,) = s.events()
    assert isinstance(ev, Closed)
    assert ev.reason == "qos2_not_supported"


def test_subscribe_grants_at_most_qos1_and_is_reported() -> None:
    s = connected()
    s.receive_data(gen_subscribe(9, [("$resource/#", 2), ("x", 0), ("y", 1)]), 101.0)
    (ev,) = s.events()
    assert isinstance(ev, Subscribe)
    assert s.data_to_send() == gen_suback(9, [1, 0, 1])


def test_unsubscribe_and_ping_are_answered_in_order() -> None:
    s = connected()
    s.receive_data(gen_unsubscribe(4, ["a/b"]) + gen_pingreq(), 101.0)
    assert s.events() == []
    assert s.data_to_send() == gen_unsuback(4) + gen_pingresp()


def test_disconnect_is_clean_and_discards_the_will() -> None:
    s = Session(now=0.0)
    s.receive_data(gen_connect("c", will_topic="status", will_payload=b"gone"), 0.0)
    s.events()
    s.accept()
    assert s.will is not None
    assert (s.will.topic, s.will.payload, s.will.qos) == ("status", b"gone", 0)
    s.receive_data(gen_disconnect() + gen_pingreq(), 1.0)
    (ev,) = s.events()
    assert isinstance(ev, Closed)
    assert ev.clean
    assert ev.reason == "client_disconnect"
    assert s.will is None
    s.data_to_send()
    assert s.data_to_send() == b""  # the PINGREQ after DISCONNECT was not answered


def test_eof_is_an_unclean_end() -> None:
    s = connected()
    s.receive_data(b"", 101.0)
    (ev,) = s.events()
    assert isinstance(ev, Closed)
    assert ev.reason == "peer_closed"
    assert not ev.clean


def test_good_packets_before_a_violation_are_returned_first() -> None:
    s = connected()
    s.receive_data(gen_publish("$resource/a", "1", qos=1, mid=1) + b"\xf0\x00", 101.0)
    events = s.events()
    assert isinstance(events[0], Publish)
    assert isinstance(events[-1], Closed)
    assert events[-1].reason == "malformed_packet"


def test_oversized_packet_refused_from_its_header() -> None:
    s = connected(max_packet_size=1024)
    big = gen_publish("$resource/a", b"x" * 2000)
    s.receive_data(big[:5], 101.0)  # the fixed header alone is enough to refuse
    (ev,) = s.events()
    assert isinstance(ev, Closed)
    assert ev.reason == "packet_too_large"


def test_close_is_idempotent_first_reason_wins() -> None:
    s = connected()
    s.close("duplicate_connection", "kicked")
    s.close("idle_timeout", "late")
    assert s.closed is not None
    assert s.closed.reason == "duplicate_connection"
    assert s.state is SessionState.CLOSED


def test_server_publish_is_qos0_without_retain() -> None:
    s = connected()
    s.publish("$resource/config_io/1700000000000000", b"{}")
    assert s.data_to_send() == gen_publish("$resource/config_io/1700000000000000", b"{}")


def test_accept_twice_is_a_bug() -> None:
    s = connected()
    with pytest.raises(RuntimeError):
        s.accept()


# -- before CONNACK (docs/decisions.md "MQTT before CONNACK"; MQTT 3.1.1 §3.1.4) ------------


def test_packets_behind_connect_wait_for_the_decision() -> None:
    """PINGREQ, SUBSCRIBE and UNSUBSCRIBE pipelined behind the CONNECT are not answered
    before the CONNACK: the session returns the CONNECT alone and holds the rest."""
    s = Session(now=0.0)
    s.receive_data(
        gen_connect("c", username="", password="t")
        + gen_pingreq()
        + gen_subscribe(7, [("$resource/x", 1)])
        + gen_unsubscribe(8, ["$resource/x"])
        + gen_publish("$resource/a", "1", qos=1, mid=9),
        1.0,
    )
    (ev,) = s.events()
    assert isinstance(ev, Connect)
    assert s.events() == []  # still undecided: nothing more, nothing answered
    assert s.data_to_send() == b""
    assert s.packets_in == 5  # decoded (and counted), only held
    s.accept()
    events = s.events()
    assert [type(e) for e in events] == [Subscribe, Publish]
    assert s.inflight == 1
    assert s.data_to_send() == (
        gen_connack(0) + gen_pingresp() + gen_suback(7, [1]) + gen_unsuback(8)
    )


def test_refused_connect_discards_what_was_held() -> None:
    """MQTT-3.1.4-5: after a refused CONNECT nothing sent behind it is processed."""
    s = Session(now=0.0)
    s.receive_data(
        gen_connect("c", username="", password="bad")
        + gen_pingreq()
        + gen_publish("$resource/a", "1", qos=1, mid=1),
        1.0,
    )
    (ev,) = s.events()
    assert isinstance(ev, Connect)
    s.refuse(ConnAckCode.BAD_USERNAME_OR_PASSWORD, "not_authenticated", "bad token")
    assert s.events() == []
    assert s.data_to_send() == gen_connack(4)


def test_connect_publish_disconnect_in_one_read() -> None:
    """Firmware on slow links writes CONNECT, PUBLISH and DISCONNECT at once: after the
    CONNACK the PUBLISH is returned and the session then ends cleanly."""
    s = Session(now=0.0)
    s.receive_data(
        gen_connect("c", username="", password="t", will_topic="w", will_payload=b"gone")
        + gen_publish("$resource/a", "1", qos=1, mid=3)
        + gen_disconnect(),
        1.0,
    )
    (ev,) = s.events()
    assert isinstance(ev, Connect)
    assert s.state is SessionState.AUTHENTICATING
    s.accept()
    pub, closed = s.events()
    assert isinstance(pub, Publish)
    assert pub.packet_id == 3
    assert closed == Closed("client_disconnect", "DISCONNECT", clean=True)
    assert s.will is None
    s.ack([3])  # the commit comes after the DISCONNECT was read: still acknowledged
    assert s.data_to_send() == gen_connack(0) + gen_puback(3)


def test_violation_behind_connect_ends_after_the_decision() -> None:
    """A malformed packet behind the CONNECT is seen once the CONNECT is decided."""
    s = Session(now=0.0)
    s.receive_data(gen_connect("c", username="", password="t") + b"\x00\x00", 1.0)
    (ev,) = s.events()
    assert isinstance(ev, Connect)
    s.accept()
    (closed,) = s.events()
    assert isinstance(closed, Closed)
    assert closed.reason == "malformed_packet"
    assert s.data_to_send() == gen_connack(0)


def test_eof_while_authenticating_ends_the_session() -> None:
    s = Session(now=0.0)
    s.receive_data(gen_connect("c"), 1.0)
    s.events()
    s.receive_data(b"", 2.0)
    (closed,) = s.events()
    assert closed == Closed("peer_closed", "the client closed the connection")
    assert s.state is SessionState.CLOSED
