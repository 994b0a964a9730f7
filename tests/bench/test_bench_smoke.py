"""Smoke tests that keep the benchmark harness from rotting (a few seconds in total).

They drive the real load generators against the real null sink and a real mosquitto on
127.0.0.1 for about a second each.  No timing assertions: only that the counts are sane
(something was sent, QoS 1 acks == sent, nothing errored) and that the guards hold.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a top-level directory, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import mqtt_wire, peers  # noqa: E402
from bench.httpload import HttpLoad, parse_responses, run_http  # noqa: E402
from bench.loadgen import LoadRun, MqttLoad, connect_storm, run_mqtt  # noqa: E402
from bench.nullsink import scan_http, scan_mqtt  # noqa: E402

HAVE_MOSQUITTO = shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


def test_loadgen_refuses_other_hosts() -> None:
    for host in ("localhost", "0.0.0.0", "10.0.0.1", "::1"):
        with pytest.raises(ValueError, match="refuses host"):
            MqttLoad(port=1883, host=host)
        with pytest.raises(ValueError, match="refuses host"):
            HttpLoad(port=80, host=host)


def test_null_sink_answers_by_the_spec() -> None:
    """PUBACK carries the PUBLISH's packet id (§3.4); CONNACK/PINGRESP/SUBACK bytes (§3.2, 3.13,
    3.9) are written out by hand here, not taken from the builders under test."""
    stream = bytearray(
        bytes.fromhex("101000044d5154540402025800046e616d65")  # CONNECT "name", keepalive 600
        + bytes.fromhex("320700017400 2a 6869".replace(" ", ""))  # QoS1 t="t" id=42 "hi"
        + bytes.fromhex("c000")  # PINGREQ
        + bytes.fromhex("82060007000161 00".replace(" ", ""))  # SUBSCRIBE id=7 "a" QoS0
        + bytes.fromhex("3003")  # start of an incomplete PUBLISH
    )
    out = bytearray()
    used, closed = scan_mqtt(stream, out)
    assert not closed
    assert used == len(stream) - 2
    assert bytes(out) == bytes.fromhex("200200004002002ad0009003000700")


def test_http_parsers_count_complete_messages_only() -> None:
    req = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    out = bytearray()
    buf = bytearray(req * 2 + req[:-1])
    used, _ = scan_http(buf, out)
    assert used == 2 * len(req)
    assert out.count(b"HTTP/1.1 204") == 2
    resp = bytearray(
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"
    )
    assert parse_responses(resp) == (1, 1)
    assert bytes(resp).startswith(b"HTTP/1.1 200")


def test_split_frames_keeps_partial_frames() -> None:
    one = mqtt_wire.publish("t", b"x" * 300, qos=1, packet_id=9)  # 2-byte remaining length
    buf = bytearray(one + one[:5])
    frames = mqtt_wire.split_frames(buf)
    assert [f for f, _ in frames] == [0x32]
    assert bytes(buf) == one[:5]


@pytest.mark.parametrize("qos", [0, 1])
def test_loadgen_against_null_sink(qos: int) -> None:
    with peers.null_sink("mqtt") as sink:
        res = run_mqtt(
            MqttLoad(port=sink.ports["mqtt"], connections=4, qos=qos, duration=0.5, processes=2)
        )
    assert res.connections == 4
    assert res.errors == {}
    assert res.drained
    assert res.sent > 0
    assert res.elapsed > 0
    if qos:
        assert res.acked == res.sent
        assert res.p50_ms is not None
        assert res.p99_ms is not None
        assert 0 < res.p50_ms <= res.p99_ms


def test_loadgen_count_limit_is_exact_for_qos1() -> None:
    with peers.null_sink("mqtt") as sink:
        res = run_mqtt(
            MqttLoad(port=sink.ports["mqtt"], connections=2, qos=1, count=500, duration=5)
        )
    assert res.sent == res.acked == 1000


def test_http_loadgen_against_null_sink() -> None:
    with peers.null_sink("http") as sink:
        res = run_http(HttpLoad(port=sink.ports["http"], connections=4, duration=0.5))
    assert res.errors == {}
    assert res.acked > 0
    assert res.sent == res.acked


@pytest.mark.needs_tool
@pytest.mark.skipif(
    not HAVE_MOSQUITTO, reason="mosquitto not installed (scripts/bootstrap --system)"
)
def test_loadgen_against_mosquitto(tmp_path: Path) -> None:
    with peers.mosquitto(tmp_path / "mosq") as srv:
        for qos, tls in ((0, False), (1, False), (1, True)):
            port = srv.ports["mqtt_tls" if tls else "mqtt"]
            res = run_mqtt(
                MqttLoad(port=port, connections=3, qos=qos, tls=tls, duration=0.5, processes=1)
            )
            assert res.errors == {}, (qos, tls)
            assert res.connections == 3
            assert res.sent > 0
            if qos:
                assert res.acked == res.sent
        storm = connect_storm(MqttLoad(port=srv.ports["mqtt"], connections=200))
        assert storm.connections == 200
        assert storm.connect_errors == 0
        before = srv.rss_bytes()
        with LoadRun(MqttLoad(port=srv.ports["mqtt"], connections=300), "hold") as run:
            assert run.result.connections == 300
            assert srv.rss_bytes() > before
            run.release()
