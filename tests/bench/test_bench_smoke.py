"""Smoke tests that keep the benchmark harness from rotting (seconds each).

They drive the real load generators (the Python MQTT one, wrk, h2load) against the real null
sinks (bench.nullsink, nginx), real peers (mosquitto, aedes, bare hypercorn and uvicorn) and
the real gateway on 127.0.0.1 for about a second each, and run the HTTP and MQTT scenarios
with tiny loads (``Ctx(smoke=True)``).  No timing assertions: only that the counts are sane
(something was answered, QoS 1 acks == sent, nothing errored), that each connection keeps
one identity, that CPU is summed over a process tree, and that the guards hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a top-level directory, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import mqtt_wire, peers, report  # noqa: E402
from bench.httpgen import HttpWrites, run_h2load, run_wrk  # noqa: E402
from bench.loadgen import LoadRun, MqttLoad, connect_storm, run_mqtt  # noqa: E402
from bench.mqtt_conns import TlsWire  # noqa: E402
from bench.nullsink import scan_http, scan_mqtt  # noqa: E402
from bench.scenarios import SCENARIOS, Ctx, Row, record_framing  # noqa: E402
from bench.scenarios_http import HTTP_SCENARIOS  # noqa: E402

HAVE_MOSQUITTO = shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()
HAVE_HTTP_TOOLS = all(shutil.which(t) for t in ("wrk", "h2load")) and (
    shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()
)
needs_http_tools = [
    pytest.mark.needs_tool,
    pytest.mark.skipif(
        not HAVE_HTTP_TOOLS, reason="wrk, h2load, nginx not installed (scripts/bootstrap --system)"
    ),
]


def test_loadgen_refuses_other_hosts() -> None:
    for host in ("localhost", "0.0.0.0", "10.0.0.1", "::1"):
        with pytest.raises(ValueError, match="refuses host"):
            MqttLoad(port=1883, host=host)


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


def test_null_sink_http_answers_complete_requests_only() -> None:
    req = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    out = bytearray()
    buf = bytearray(req * 2 + req[:-1])
    used, _ = scan_http(buf, out)
    assert used == 2 * len(req)
    assert out.count(b"HTTP/1.1 204") == 2


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


def test_loadgen_paces_its_connects() -> None:
    """``connect_rate`` holds new connections back: past the first ``connect_concurrency``,
    20 connections at 40/s cannot all be open before (20 - 2) / 40 s."""
    with peers.null_sink("mqtt") as sink:
        cfg = MqttLoad(
            port=sink.ports["mqtt"],
            connections=20,
            processes=1,
            connect_concurrency=2,
            connect_rate=40.0,
        )
        with LoadRun(cfg, "hold") as run:
            res = run.result
            run.release()
    assert res.connections == 20
    assert res.errors == {}
    assert res.connect_seconds >= (20 - 2) / 40


def test_loadgen_connect_phase_is_bounded_and_names_the_reason() -> None:
    """A server that accepts TCP but never answers the TLS handshake: every connection is
    counted as ``connect timeout`` at ``connect_timeout``, a refused port by its errno;
    nothing blocks past the bound."""
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        cfg = MqttLoad(port=silent.getsockname()[1], connections=4, tls=True, connect_timeout=1.0)
        res = run_mqtt(cfg)
        assert res.connections == 0
        assert res.errors == {"connect timeout": 4}
        refused = run_mqtt(dataclasses.replace(cfg, port=closed.getsockname()[1]))
        assert refused.connections == 0
        assert refused.errors == {"ConnectionRefusedError(ECONNREFUSED)": 4}


def _stuck_connect(*_args: object, progress: Any = None, **_kw: object) -> None:
    """A worker that reports once, then hangs (what a wedged generator process looks like)."""
    progress({"ok": 3, "failed": 0, "in_flight": 1, "waiting": 0})
    threading.Event().wait()


def test_loadrun_names_a_silent_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connecting worker that stops reporting fails the run at once with its index, pid and
    last counts, instead of the whole connect bound and an anonymous 'did not answer'."""
    from bench import loadgen

    monkeypatch.setattr(loadgen, "connect_all", _stuck_connect)  # inherited by the fork
    monkeypatch.setattr(loadgen, "SILENT_LIMIT", 0.5)
    run = LoadRun(MqttLoad(port=1883, connections=2, processes=1, connect_timeout=600), "hold")
    with pytest.raises(TimeoutError, match=r"worker 0 \(pid \d+\) sent no progress") as err:
        run.__enter__()
    assert "ok 3, failed 0, in_flight 1, waiting 0" in str(err.value)
    assert not any(p.is_alive() for p in run._procs)


def _killed_connect(*_args: object, progress: Any = None, **_kw: object) -> None:
    """A worker that reports once, then is killed (what the out-of-memory killer does)."""
    progress({"ok": 5, "failed": 0, "in_flight": 0, "waiting": 1})
    os.kill(os.getpid(), signal.SIGKILL)


def test_loadrun_names_a_killed_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed mid-connect is reported at once with its signal, not after the
    connect bound (the parent keeps no copy of a worker's pipe end, so its death reads EOF)."""
    from bench import loadgen

    monkeypatch.setattr(loadgen, "connect_all", _killed_connect)
    run = LoadRun(MqttLoad(port=1883, connections=4, processes=2, connect_timeout=600), "hold")
    with pytest.raises(RuntimeError, match=r"worker \d \(pid \d+\) was killed by signal 9"):
        run.__enter__()
    assert not any(p.is_alive() for p in run._procs)


def test_loadgen_count_limit_is_exact_for_qos1() -> None:
    with peers.null_sink("mqtt") as sink:
        res = run_mqtt(
            MqttLoad(port=sink.ports["mqtt"], connections=2, qos=1, count=500, duration=5)
        )
    assert res.sent == res.acked == 1000


_BURN = """
import subprocess, sys, time
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", __doc__, "child"])
    assert child.wait() == 0
    print("reaped", flush=True)
    sys.stdin.read()
    sys.exit(0)
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("burnt", flush=True)
sys.stdin.readline()
"""


def test_tree_cpu_sums_descendants_and_reaped_children() -> None:
    """A child's CPU counts while it runs (the tree walk) and after its parent reaped it
    (the parent's cutime): a multi-process gateway's workers are never left out."""
    code = f"__doc__ = {_BURN!r}\n{_BURN}"
    with subprocess.Popen(
        [sys.executable, "-c", code, "parent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdin is not None
        try:
            assert proc.stdout.readline() == b"burnt\n"  # the child burnt 0.3 s of CPU
            assert len(peers.process_tree(proc.pid)) == 2
            child = peers.children_of(proc.pid)[0]
            assert peers.tree_cpu_seconds(proc.pid) - peers.tree_cpu_seconds(child) < 0.3
            assert peers.tree_cpu_seconds(proc.pid) >= 0.29
            proc.stdin.write(b"exit\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == b"reaped\n"
            assert peers.process_tree(proc.pid) == [proc.pid]
            assert peers.tree_cpu_seconds(proc.pid) >= 0.29
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


class _Recorder(socketserver.ThreadingTCPServer):
    """HTTP/1.1 keep-alive server that records (connection, Host, token) per request."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.seen: dict[int, set[tuple[str, str]]] = defaultdict(set)
        self.lock = threading.Lock()


class _RecordingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Recorder)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            line = self.rfile.readline()
            if not line:
                return
            headers = {}
            while (h := self.rfile.readline()) not in (b"\r\n", b""):
                k, _, v = h.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            self.rfile.read(int(headers.get("content-length", "0")))
            with server.lock:
                server.seen[id(self)].add((headers["host"], headers.get("x-exosite-cik", "")))
            self.wfile.write(b"HTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.needs_tool
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_wrk_keeps_one_identity_per_connection() -> None:
    """3 devices over 6 connections: every connection carries one token for its life, every
    token is used, and the Host is the name from the URL (the address is 127.0.0.1)."""
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        load = HttpWrites(
            port=server.server_address[1],
            host="c0ffee.m2.localhost",
            connections=6,
            devices=3,
            duration=1,
            tokens=("tok-a", "tok-b", "tok-c"),
        )
        res, cmd = run_wrk(load)
    finally:
        server.shutdown()
        server.server_close()
    assert res.errors == {}
    assert res.acked > 0
    assert "TOKENS" in cmd
    assert "tok-a" not in cmd
    per_conn = list(server.seen.values())
    assert len(per_conn) == 6
    assert all(len(ids) == 1 for ids in per_conn)
    used = sorted(next(iter(ids)) for ids in per_conn)
    host = f"c0ffee.m2.localhost:{load.port}"
    assert used == [(host, t) for t in ("tok-a", "tok-a", "tok-b", "tok-b", "tok-c", "tok-c")]


@pytest.mark.parametrize("tls", [False, True])
def test_wrk_and_h2load_against_nginx(tmp_path: Path, tls: bool) -> None:
    if not HAVE_HTTP_TOOLS:
        pytest.skip("wrk, h2load, nginx not installed (scripts/bootstrap --system)")
    with peers.nginx_sink(tmp_path / "nginx") as srv:
        port = srv.ports["https" if tls else "http"]
        load = HttpWrites(
            port=port, host="localhost", connections=4, devices=2, duration=1, tls=tls
        )
        results = [run_wrk(load)[0]] + ([run_h2load(load)[0]] if tls else [])
    for res in results:
        assert res.errors == {}
        assert res.acked == res.sent > 0
        assert res.p50_ms is not None
        assert res.p99_ms is not None
        assert 0 < res.p50_ms <= res.p99_ms


def _by(rows: list[Row]) -> dict[tuple[str, str, str], Row]:
    return {(r.target, r.load, r.metric): r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["http_writes", "http_writes_tls", "http2_writes_tls"])
def test_http_scenarios_smoke(tmp_path: Path, scenario: str) -> None:
    """The whole scenario at 4 connections / 2 devices for one second: every target answers
    only 2xx, and the gateway's CPU per request is reported beside its rate."""
    if not HAVE_HTTP_TOOLS:
        pytest.skip("wrk, h2load, nginx not installed (scripts/bootstrap --system)")
    ctx = Ctx(work=tmp_path, quick=True, repeats=1, duration=1.0, smoke=True)
    rows = _by(HTTP_SCENARIOS[scenario](ctx))
    targets = ["nginx", "hypercorn", "gateway"] + (
        [] if scenario.startswith("http2") else ["uvicorn"]
    )
    for target in targets:
        rate = rows[(target, "4", "rate")]
        assert (rate.value or 0) > 0, rate.note
        assert "errors" not in rate.note, rate.note
        assert "2 devices" in rate.note
        cpu = rows[(target, "4", "cpu_per_msg")]
        assert cpu.value is not None
        assert cpu.value > 0
    assert "TOKEN" in rows[("gateway", "4", "rate")].note


@pytest.mark.slow
def test_http_auth_scenario_smoke(tmp_path: Path) -> None:
    """Password and token devices of one gateway at 4 connections / 2 devices: both sides
    answer only 2xx (a refused Basic credential would show as non-2xx errors)."""
    if not HAVE_HTTP_TOOLS:
        pytest.skip("wrk, h2load, nginx not installed (scripts/bootstrap --system)")
    ctx = Ctx(work=tmp_path, quick=True, repeats=1, duration=1.0, smoke=True)
    rows = _by(HTTP_SCENARIOS["http_auth_tls"](ctx))
    for side, what in (("token", "2 token devices"), ("gateway", "2 password devices")):
        rate = rows[(side, "4", "rate")]
        assert (rate.value or 0) > 0, rate.note
        assert "errors" not in rate.note, rate.note
        assert what in rate.note
    assert "TOKENS 'data_in=0123456789…' Authorization`" in rows[("gateway", "4", "rate")].note
    # the generator's ceiling: the same wrk load against nginx in the same run
    assert (rows[("nginx", "4", "rate")].value or 0) > 0


def test_record_framing_never_reports_batched_as_per_record() -> None:
    """Without the generator's per-record knob the per-record scenarios skip with the reason;
    with it, each framing sets it explicitly."""
    assert record_framing(batched=True) in ({}, {"per_record": False})
    if "per_record" in {f.name for f in dataclasses.fields(MqttLoad)}:
        assert record_framing(batched=False) == {"per_record": True}
        return
    with pytest.raises(peers.PeerUnavailable, match="one PUBLISH per record"):
        record_framing(batched=False)
    rows = SCENARIOS["mqtt_qos1_tls"](Ctx(Path("/nonexistent"), True, 1, 1.0, smoke=True))
    assert rows
    assert all(r.value is None and "skipped" in r.note for r in rows)


@pytest.mark.slow
@pytest.mark.needs_tool
@pytest.mark.skipif(
    not HAVE_MOSQUITTO, reason="mosquitto not installed (scripts/bootstrap --system)"
)
def test_mqtt_batched_scenario_smoke(tmp_path: Path) -> None:
    """mqtt_qos1_tls_batched with 1 and 4 devices for half a second: the peers that can run
    here answer every PUBLISH, and each reports CPU per message."""
    ctx = Ctx(work=tmp_path, quick=True, repeats=1, duration=0.5, smoke=True)
    rows = _by(SCENARIOS["mqtt_qos1_tls_batched"](ctx))
    for target in ("nullsink", "mosquitto", "gateway"):
        for load in ("1", "4"):
            rate = rows[(target, load, "rate")]
            assert (rate.value or 0) > 0, rate.note
            assert "errors" not in rate.note, rate.note
            assert rows[(target, load, "cpu_per_msg")].value is not None


@pytest.mark.needs_tool
def test_aedes_peer_plain_and_tls(tmp_path: Path) -> None:
    try:
        peers.aedes_ready()
    except peers.PeerUnavailable as exc:
        pytest.skip(str(exc))
    with peers.aedes(tmp_path / "aedes", tls=True) as srv:
        for tls in (False, True):
            res = run_mqtt(
                MqttLoad(
                    port=srv.ports["mqtt_tls" if tls else "mqtt"],
                    connections=2,
                    qos=1,
                    tls=tls,
                    duration=0.5,
                    processes=1,
                )
            )
            assert res.errors == {}, tls
            assert res.acked == res.sent > 0
        assert srv.cpu_seconds() > 0


def test_report_keeps_retired_figures_out_of_targets(tmp_path: Path) -> None:
    """A retired scenario's rows never feed a target, and the report says what is absent."""
    rows = [
        Row("mqtt_qos0_legacy", t, "1", "rate", "msg/s", v).to_json()
        for t, v in (("gateway", 90.0), ("mosquitto", 100.0))
    ]
    results = {"machine": {}, "runs": {}, "rows": rows}
    out = tmp_path / "RESULTS.md"
    report.write(results, out)
    text = out.read_text()
    assert (
        "| MQTT plain, one PUBLISH per send, QoS 0, 1 and 100 devices: >= 0.8x mosquitto |"
        " — | not measured |" in text
    )
    assert "# Retired figures" in text
    assert "Not measured: `mqtt_qos0`" in text


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


def _records(cipher: bytes) -> list[int]:
    """The content types of the TLS records in ``cipher`` (RFC 8446 §5.1 headers)."""
    out, pos = [], 0
    while pos < len(cipher):
        out.append(cipher[pos])
        pos += 5 + int.from_bytes(cipher[pos + 3 : pos + 5], "big")
    assert pos == len(cipher)
    return out


def test_tls_wire_seals_one_record_per_publish(tmp_path: Path) -> None:
    """What device clients send: each PUBLISH its own TLS record; the batched mode packs a
    64 KiB buffer into 16 KiB records.  Checked against an independent server SSLObject."""
    cert, key = peers.make_cert(tmp_path / "certs")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    client = TlsWire(cctx, "localhost")
    for _ in range(4):
        client.handshake()
        s_in.write(client.pending())
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        client.incoming.write(s_out.read())
    assert client.handshake()
    packets = [mqtt_wire.publish("t", b"%d" % i) for i in range(3)]
    cipher = client.seal(packets)
    assert _records(cipher) == [0x17, 0x17, 0x17]  # application data, one per packet
    s_in.write(cipher)
    assert [server.read(65536) for _ in range(3)] == packets  # one record per read
    batched = client.seal_batched(packets[0] * 1000)
    assert len(_records(batched)) == -(-len(packets[0]) * 1000 // 16384)


@pytest.mark.needs_tool
@pytest.mark.skipif(
    not HAVE_MOSQUITTO, reason="mosquitto not installed (scripts/bootstrap --system)"
)
@pytest.mark.parametrize("per_record", [True, False])
def test_tls_record_modes_against_mosquitto(tmp_path: Path, per_record: bool) -> None:
    """Both TLS record modes, QoS 0 and 1, with exact counts: every PUBLISH arrives, every
    QoS 1 one is acknowledged, whether the records were pre-built or sealed on the fly
    (a stock of 300 records for 2 x 1,000 messages runs out)."""
    with peers.mosquitto(tmp_path / "mosq") as srv:
        for qos in (0, 1):
            cfg = MqttLoad(
                port=srv.ports["mqtt_tls"],
                connections=2,
                qos=qos,
                tls=True,
                per_record=per_record,
                count=1000,
                window=50,
                duration=10,
                processes=1,
                tls_prebuild_records=300,
            )
            res = run_mqtt(cfg)
            assert res.errors == {}, (qos, per_record)
            assert res.sent >= 2000
            if qos:
                assert res.acked == res.sent == 2000


def test_source_addresses_must_be_loopback() -> None:
    MqttLoad(port=1883, source_hosts=("127.0.0.2", "127.0.0.9"))
    for src in ("10.0.0.1", "0.0.0.0", "127.0.0", "localhost"):
        with pytest.raises(ValueError, match="source address"):
            MqttLoad(port=1883, source_hosts=(src,))


@pytest.mark.parametrize("scenario", ["node_hold_tls", "node_qos1_batched"])
def test_node_scenarios_run_tiny(tmp_path: Path, scenario: str) -> None:
    """The multi-process node scenarios (bench/scenarios_node.py) with smoke loads: the
    default node holds its TLS devices from several source addresses; 1 and 2 workers ack."""
    from bench.scenarios_node import NODE_SCENARIOS

    rows = NODE_SCENARIOS[scenario](Ctx(tmp_path, quick=True, repeats=1, duration=1.0, smoke=True))
    assert rows
    assert not [r for r in rows if r.value is None], [r.note for r in rows]
    if scenario == "node_hold_tls":
        got = {r.metric: r.value for r in rows}
        assert got["held"] == 200
        assert got["refused"] == 0
        from gateway.config import GatewayConfig, resolve_workers

        # the supervisor, the store owner and the default number of workers
        assert f"by {2 + resolve_workers(GatewayConfig())} processes" in rows[0].note
    else:  # both worker counts, and the generator's ceiling in the same run
        assert {r.target for r in rows} == {"nullsink", "gateway-w1", "gateway-w2"}


@pytest.mark.parametrize("_tools", [pytest.param(None, marks=needs_http_tools)])
def test_node_http_scenario_runs_tiny(tmp_path: Path, _tools: None) -> None:
    from bench.scenarios_node import NODE_SCENARIOS

    rows = NODE_SCENARIOS["node_http"](
        Ctx(tmp_path, quick=True, repeats=1, duration=1.0, smoke=True)
    )
    assert {r.target for r in rows if r.metric == "rate" and r.value} == {
        "nginx",
        "gateway-w1",
        "gateway-w2",
    }
