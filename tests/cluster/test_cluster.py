"""A 3-node cluster (scripts/cluster: PostgreSQL, NATS JetStream, HAProxy) with real clients
through HAProxy: what crosses nodes (pushes, long-poll wake-ups, duplicate_connection, lock
kicks, the live log), the murano-client, paho and ExoEdge-style flows, and faults under QoS 1
load (kill -9 of a node; PostgreSQL and NATS restarted).  The cluster starts once for the
module; the fault tests come last and leave every part running again."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.chaos_cluster import run_cluster_chaos
from gateway.testing import cluster
from gateway.testing.node import wait_for

from .conftest import HOST, Cluster, Mqtt

pytestmark = [pytest.mark.needs_tool, pytest.mark.slow]

VENV = Path(__file__).resolve().parents[2] / ".venv-murano" / "bin"
TOKEN_RE = re.compile(r"[0-9a-f]{40}")
needs_murano = pytest.mark.skipif(
    not (VENV / "gdc").exists(), reason="murano-client missing: run scripts/bootstrap --system"
)


def test_cluster_json_and_status(gw_cluster: Cluster) -> None:
    raw = json.loads((gw_cluster.root / "cluster.json").read_text())
    assert set(raw) == {"haproxy", "nodes", "admin_token", "ca", "postgresql", "nats"}
    assert set(raw["haproxy"]) == {"host", "tls_port", "mqtt_tls_port"}
    assert [set(n) for n in raw["nodes"]] == [{"name", "api", "pid"}] * 3
    assert raw["postgresql"].startswith("postgresql://")
    assert raw["nats"].startswith("nats://")
    rows = cluster.status(gw_cluster.root, quiet=True)
    assert all(ok for _name, ok, _detail in rows), rows
    for name in gw_cluster.names:  # every node answers, over the one store
        r = gw_cluster.api(name).get("/connectors/demo")
        assert r.status_code == 200, r.text


# -- what crosses nodes -------------------------------------------------------------------


def test_set_value_on_one_node_reaches_mqtt_device_on_another(gw_cluster: Cluster) -> None:
    token = gw_cluster.device("x-push")
    mqtt = Mqtt(gw_cluster, token)
    with gw_cluster.only("node-1", "mqtt_tls"):
        mqtt.connect()
    wait_for(lambda: gw_cluster.holder("x-push") == "node-1", 10, "connect on node-1")
    r = gw_cluster.api("node-3").patch(
        "/connectors/demo/devices/x-push/state", json={"data_out": "go"}
    )
    assert r.status_code == 200, r.text
    wait_for(lambda: mqtt.messages, 10, "the MQTT push across nodes")
    topic, payload = mqtt.messages[0]
    assert re.fullmatch(r"\$resource/data_out/\d+", topic)
    assert payload == b"go"
    mqtt.stop()


def _long_poll(
    c: Cluster, token: str, node: str, timeout_ms: int = 20_000
) -> concurrent.futures.Future[httpx.Response]:
    """An HTTP long-poll for ``data_out`` held by ``node``; returns once HAProxy has
    handed its connection to that node."""
    client = c.https()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    before = c.sessions("tls", node)

    def poll() -> httpx.Response:
        try:
            return client.get(
                "/onep:v1/stack/alias?data_out",
                headers={"X-Exosite-CIK": token, "Request-Timeout": str(timeout_ms)},
            )
        finally:
            client.close()

    with c.only(node, "tls"):
        future = pool.submit(poll)
        wait_for(lambda: c.sessions("tls", node) > before, 10, "the long-poll's connection")
    pool.shutdown(wait=False)
    return future


def test_set_value_wakes_long_poll_on_another_node(gw_cluster: Cluster) -> None:
    token = gw_cluster.device("x-poll")
    poll = _long_poll(gw_cluster, token, "node-2")
    r = gw_cluster.api("node-3").patch(
        "/connectors/demo/devices/x-poll/state", json={"data_out": "wake"}
    )
    assert r.status_code == 200, r.text
    answer = poll.result(15)
    assert (answer.status_code, answer.text) == (200, "data_out=wake")


def test_duplicate_connection_on_another_node_closes_the_first(gw_cluster: Cluster) -> None:
    token = gw_cluster.device("x-dup")
    first = Mqtt(gw_cluster, token)
    with gw_cluster.only("node-1", "mqtt_tls"):
        first.connect()
    wait_for(lambda: gw_cluster.holder("x-dup") == "node-1", 10, "connect on node-1")
    second = Mqtt(gw_cluster, token)
    with gw_cluster.only("node-2", "mqtt_tls"):
        second.connect()
    assert first.disconnected.wait(10), "the first connection was not closed"
    assert gw_cluster.holder("x-dup") == "node-2"
    assert second.publish("from-second")
    assert not second.disconnected.is_set()

    def closed_as_duplicate() -> bool:
        return any(
            e["type"] == "disconnect"
            and e["reason"] == "duplicate_connection"
            and str(e["connection_id"]).startswith("node-1.")
            for e in gw_cluster.events("x-dup", via="node-3")
        )

    wait_for(closed_as_duplicate, 10, "the duplicate_connection disconnect")
    r = gw_cluster.api("node-3").get("/connectors/demo/devices/x-dup")
    assert r.json()["online"] is True
    second.stop()
    first.c.loop_stop()


def test_lock_on_one_node_ends_sessions_on_the_others(gw_cluster: Cluster) -> None:
    token = gw_cluster.device("x-lock")
    mqtt = Mqtt(gw_cluster, token)
    with gw_cluster.only("node-1", "mqtt_tls"):
        mqtt.connect()
    wait_for(lambda: gw_cluster.holder("x-lock") == "node-1", 10, "connect on node-1")
    poll = _long_poll(gw_cluster, token, "node-2")
    t0 = time.monotonic()
    r = gw_cluster.api("node-3").patch("/connectors/demo/devices/x-lock", json={"locked": True})
    assert r.status_code in (200, 204), r.text
    assert mqtt.disconnected.wait(5), "the MQTT session on node-1 was not closed"
    assert poll.result(5).status_code == 403  # the long-poll on node-2 ended: locked
    assert time.monotonic() - t0 < 5
    mqtt.c.loop_stop()


def test_event_log_long_poll_on_one_node_wakes_for_a_write_on_another(
    gw_cluster: Cluster,
) -> None:
    """``GET …/events?after=N&wait=S`` on node-1 returns when a device connected to node-2
    writes (the event committed by node-2 reaches node-1 over NATS)."""
    token = gw_cluster.device("x-evpoll")
    mqtt = Mqtt(gw_cluster, token)
    with gw_cluster.only("node-2", "mqtt_tls"):
        mqtt.connect()
    wait_for(lambda: gw_cluster.holder("x-evpoll") == "node-2", 10, "connect on node-2")
    r = gw_cluster.api("node-1").get("/connectors/demo/events", params={"after": -1})
    cursor = int(r.json()["next"])
    pool = concurrent.futures.ThreadPoolExecutor(1)
    t0 = time.monotonic()
    poll = pool.submit(
        gw_cluster.api("node-1").get,
        "/connectors/demo/events",
        params={"after": cursor, "wait": 20},
    )
    assert mqtt.publish("wake-the-poll")
    items = poll.result(20).json()["items"]
    pool.shutdown()
    assert time.monotonic() - t0 < 15  # woken, not timed out
    assert any(e["identity"] == "x-evpoll" and e["type"] == "data_in" for e in items), items
    mqtt.stop()


def test_live_log_of_one_node_shows_another_nodes_records(gw_cluster: Cluster) -> None:
    """A refused CONNECT on node-3 (a debug record of one of its workers) reaches a live-log
    subscriber of node-1."""
    lines: list[dict[str, object]] = []
    ready = threading.Event()
    stop = threading.Event()

    def tail() -> None:
        api = httpx.Client(base_url=gw_cluster.info.nodes[0].api + "/api/v1", timeout=30)
        api.headers.update(gw_cluster.headers)
        with api, api.stream("GET", "/connectors/demo/logs", params={"kind": "debug"}) as r:
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    lines.append(json.loads(line[6:]))
                if stop.is_set():
                    return

    threading.Thread(target=tail, daemon=True).start()
    assert ready.wait(10)

    def refused() -> list[dict[str, object]]:
        return [r for r in lines if r["event"] == "connect_refused"]

    # the interest reaches the other nodes over NATS: each attempt is a fresh refused
    # CONNECT on node-3, until one of them shows on node-1's live log
    for _attempt in range(10):
        bad = Mqtt(gw_cluster, "9" * 40)
        with gw_cluster.only("node-3", "mqtt_tls"):
            bad.c.connect(HOST, bad.port)
            bad.c.loop_start()
            assert bad.connected.wait(10)
        bad.c.loop_stop()
        try:
            wait_for(refused, 1.5, "a connect_refused record")
            break
        except TimeoutError:
            continue
    stop.set()
    assert refused(), "no connect_refused record from node-3 on node-1's live log"


# -- the existing end-to-end flows, through HAProxy ---------------------------------------


def _state(c: Cluster, identity: str, via: str) -> dict[str, dict[str, object]]:
    r = c.api(via).get(f"/connectors/demo/devices/{identity}/state")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _gdc(c: Cluster, tmp: Path, port: int, *args: str, token: str | None = None) -> str:
    cmd = [str(VENV / "gdc"), "-H", f"mqtt://{HOST}", "-P", str(port), "-E", c.info.ca]
    if token is not None:
        cmd += ["-k", token]
    r = subprocess.run(
        [*cmd, "mqtt", *args],
        capture_output=True,
        cwd=tmp,
        env={"HOME": str(tmp), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    return r.stdout.decode().strip()


@needs_murano
@pytest.mark.parametrize("port_key", ["mqtt_tls_port", "tls_port"])
def test_gdc_mqtt_activate_publish_subscribe_ack(
    gw_cluster: Cluster, tmp_path: Path, port_key: str
) -> None:
    identity = f"gdc-{port_key}"
    port = getattr(gw_cluster.info.haproxy, port_key)
    token = _gdc(gw_cluster, tmp_path, port, "activate", "-u", identity)
    assert TOKEN_RE.fullmatch(token), token
    base = int(time.time() * 1e6) - 3_000_000
    batch = [
        {"timestamp": base + i * 1_000_000, "values": {"data_in": f'{{"001": {i}}}'}}
        for i in range(3)
    ]
    _gdc(gw_cluster, tmp_path, port, "publish", "$resource.batch", json.dumps(batch), token=token)
    st = _state(gw_cluster, identity, "node-2")["data_in"]
    assert st["reported"] == '{"001": 2}'
    _gdc(gw_cluster, tmp_path, port, "publish", "$resource/data_in", '{"001": 9}', token=token)
    assert _state(gw_cluster, identity, "node-3")["data_in"]["reported"] == '{"001": 9}'

    # subscribe through HAProxy (any node); the value is set through each other node in turn
    cmd = [str(VENV / "gdc"), "-H", f"mqtt://{HOST}", "-P", str(port), "-E", gw_cluster.info.ca]
    with subprocess.Popen(
        [*cmd, "-k", token, "mqtt", "subscribe", "--disconnect-after", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
    ) as sub:
        _subscribe_and_set(gw_cluster, identity, sub)
    _gdc(gw_cluster, tmp_path, port, "publish", "$resource/data_out", "reboot", token=token)
    st = _state(gw_cluster, identity, "node-1")["data_out"]
    assert st["reported"] == "reboot"
    assert not st["pending"]


def _subscribe_and_set(gw_cluster: Cluster, identity: str, sub: subprocess.Popen[bytes]) -> None:
    """Once ``gdc mqtt subscribe`` is online, set a value through another node; its line."""
    try:
        wait_for(
            lambda: gw_cluster.holder(identity) is not None and _online(gw_cluster, identity),
            15,
            "online",
        )
        holder = gw_cluster.holder(identity)
        setter = next(n for n in gw_cluster.names if n != holder)
        r = gw_cluster.api(setter).patch(
            f"/connectors/demo/devices/{identity}/state", json={"data_out": "reboot"}
        )
        assert r.status_code == 200, r.text
        assert sub.stdout is not None
        line = sub.stdout.readline().decode().strip()
    finally:
        sub.send_signal(signal.SIGINT)
        sub.wait(10)
    assert re.fullmatch(r"data_out\.\d+=reboot", line), line


def _online(c: Cluster, identity: str) -> bool:
    return bool(c.api("node-1").get(f"/connectors/demo/devices/{identity}").json()["online"])


@needs_murano
def test_gdc_http_commands(gw_cluster: Cluster, tmp_path: Path) -> None:
    url = f"https://{HOST}:{gw_cluster.info.haproxy.tls_port}/"

    def gdc(*args: str, token: str | None = None, uuid: str | None = None) -> str:
        cmd = [str(VENV / "gdc"), "-H", url, "-E", gw_cluster.info.ca]
        cmd += ["-k", token] if token else []
        cmd += ["-u", uuid] if uuid else []
        r = subprocess.run(
            [*cmd, "http", *args],
            capture_output=True,
            cwd=tmp_path,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
            timeout=40,
            check=False,
        )
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        return r.stdout.decode().strip()

    token = gdc("activate", uuid="gdc-http-1")
    assert len(token) == 40
    assert gdc("activate", uuid="gdc-http-1").startswith("[409]")
    assert gdc("write", "data_in", '{"001": 9.45}', token=token).startswith("[204]")
    assert gdc("read", "data_in", token=token) == '[200] data_in={"001": 9.45}'
    assert _state(gw_cluster, "gdc-http-1", "node-3")["data_in"]["reported"] == '{"001": 9.45}'

    def set_later() -> None:
        time.sleep(1.0)  # the long-poll is waiting by then (a late set is returned at once)
        gw_cluster.api("node-2").patch(
            "/connectors/demo/devices/gdc-http-1/state", json={"config_io": '{"x": 1}'}
        )

    t = threading.Thread(target=set_later)
    t.start()
    out = gdc("poll", "config_io", "20000", "0", token=token)
    t.join()
    assert out == '[200] config_io={"x": 1}'


LIBRARY_CLIENT = textwrap.dedent("""
    import json, sys, time
    from murano_client.client import MuranoClient

    host, port, ca, identity = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def say(**kw):
        print(json.dumps(kw), flush=True)

    client = MuranoClient(memory_queue=False, murano_host=host, murano_port=port,
                          murano_cacert=ca, murano_id=identity,
                          watchlist=["config_io", "data_out"])
    client.client_activate()
    say(token=client.murano_token())
    client.start_client()
    say(connected=client.is_connected())
    msg = client.watch(timeout=20)                # ExoEdge: watch, apply, ack
    ok, _ = client.ack(msg.resource, msg.payload)
    say(resource=msg.resource, payload=msg.payload, ack=ok)
    ok, _ = client.tell(resource="data_in", timestamp=time.time(), payload='{"001": 7}')
    say(tell=ok)
    sys.stdin.readline()
    client.stop_all()
""")


@needs_murano
def test_exoedge_style_library_over_mqtt(gw_cluster: Cluster, tmp_path: Path) -> None:
    """``MuranoClient`` as ExoEdge drives it (activate, watch, ack, tell) through HAProxy;
    the configuration is set through a node other than the one holding the device."""
    identity = "exoedge-1"
    script = tmp_path / "client.py"
    script.write_text(LIBRARY_CLIENT)
    args = [
        str(VENV / "python"),
        str(script),
        f"mqtt://{HOST}",
        str(gw_cluster.info.haproxy.mqtt_tls_port),
        gw_cluster.info.ca,
        identity,
    ]
    with subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            _watch_ack_tell(gw_cluster, identity, proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _watch_ack_tell(gw_cluster: Cluster, identity: str, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdin is not None
    token = json.loads(proc.stdout.readline())["token"]
    assert TOKEN_RE.fullmatch(token), token
    assert json.loads(proc.stdout.readline()) == {"connected": True}
    wait_for(lambda: _online(gw_cluster, identity), 15, "online")
    holder = gw_cluster.holder(identity)
    setter = next(n for n in gw_cluster.names if n != holder)
    config = '{"channels": {"001": {"protocol_config": {"sample_rate": 1000}}}}'
    r = gw_cluster.api(setter).patch(
        f"/connectors/demo/devices/{identity}/state", json={"config_io": config}
    )
    assert r.status_code == 200, r.text
    got = json.loads(proc.stdout.readline())
    assert got == {"resource": "config_io", "payload": config, "ack": True}
    st = _state(gw_cluster, identity, setter)["config_io"]
    assert not st["pending"]
    assert st["reported"] == config
    assert json.loads(proc.stdout.readline()) == {"tell": True}
    assert _state(gw_cluster, identity, "node-1")["data_in"]["reported"] == '{"001": 7}'
    proc.stdin.write(b"stop\n")
    proc.stdin.flush()
    assert proc.wait(15) == 0


def test_paho_qos0_qos1_and_push(gw_cluster: Cluster) -> None:
    token = gw_cluster.device("paho-1")
    mqtt = Mqtt(gw_cluster, token)
    mqtt.connect()
    assert mqtt.publish("q0", qos=0)
    assert mqtt.publish("q1", qos=1)
    wait_for(
        lambda: _state(gw_cluster, "paho-1", "node-2")["data_in"]["reported"] == "q1", 10, "q1"
    )
    holder = gw_cluster.holder("paho-1")
    setter = next(n for n in gw_cluster.names if n != holder)
    gw_cluster.api(setter).patch("/connectors/demo/devices/paho-1/state", json={"data_out": "x"})
    wait_for(lambda: mqtt.messages, 10, "the push")
    mqtt.stop()


# -- faults under load (last: each leaves the cluster whole again) ------------------------


def test_kill_9_one_node_under_qos1_load(gw_cluster: Cluster) -> None:
    """Quick version of ``scripts/chaos-cluster --fault kill-node`` (1,000 devices there)."""
    result = run_cluster_chaos(
        gw_cluster.root,
        fault="kill-node",
        devices=100,
        rate=2.0,
        before_s=5.0,
        after_s=12.0,
        prefix="kill-",
        log=lambda s: None,
    )
    victim = result.detail.removeprefix("(victim ").removesuffix(")")
    cluster.restart(gw_cluster.root, victim)
    assert result.ok, result.summary()


def test_a_node_that_dies_for_good_has_its_devices_taken_offline(gw_cluster: Cluster) -> None:
    """kill -9 of a whole node that does not come back: another node declares it lost once
    its beat is older than ``node_lost_after_s`` (15 s by default), and its devices go
    offline with a ``node_lost`` disconnect (the reason says which mechanism did it)
    instead of showing online forever."""
    token = gw_cluster.device("x-lost")
    mqtt = Mqtt(gw_cluster, token)
    with gw_cluster.only("node-3", "mqtt_tls"):
        mqtt.connect()
    wait_for(lambda: gw_cluster.holder("x-lost") == "node-3", 10, "connect on node-3")
    assert gw_cluster.api("node-1").get("/connectors/demo/devices/x-lost").json()["online"]
    victim = cluster.proc(gw_cluster.root, "node-3")
    os.kill(victim.pid, signal.SIGKILL)
    try:
        cluster.wait_gone(victim, 30)

        def offline() -> bool:
            r = gw_cluster.api("node-2").get("/connectors/demo/devices/x-lost")
            return r.json()["online"] is False

        wait_for(offline, 40, "the lost node's device offline")
        last = [e for e in gw_cluster.events("x-lost", via="node-1") if e["type"] == "disconnect"]
        assert [(e["reason"], str(e["connection_id"]).split(".")[0]) for e in last] == [
            ("node_lost", "node-3")
        ]
    finally:
        mqtt.c.loop_stop()
        cluster.restart(gw_cluster.root, "node-3")
        wait_for(
            lambda: all(ok for _n, ok, _d in cluster.status(gw_cluster.root, quiet=True)),
            60,
            "node-3 back in HAProxy",
        )


@pytest.mark.parametrize("part", ["postgresql", "nats"])
def test_restart_under_qos1_load(gw_cluster: Cluster, part: str) -> None:
    """PostgreSQL or NATS stopped for 3 s under load: nothing acknowledged while the store
    is gone, nothing acknowledged lost, the load resumes by itself."""
    result = run_cluster_chaos(
        gw_cluster.root,
        fault=f"restart-{part}",
        devices=60,
        rate=2.0,
        before_s=4.0,
        outage_s=3.0,
        after_s=10.0,
        prefix=f"{part}-",
        log=lambda s: None,
    )
    assert result.ok, result.summary()
    rows = cluster.status(gw_cluster.root, quiet=True)
    assert all(ok for _name, ok, _detail in rows), rows
