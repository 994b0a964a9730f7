"""Everything that crosses connections crosses workers (docs/architecture.md "The node"):
each test puts the two ends on different workers of ``gateway serve --workers 2`` (new
connections are pinned to one worker by stopping the other, gateway/testing/node.py) and
drives them with real clients over real sockets."""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time

import httpx
import pytest

from gateway.testing.node import pinned_to, serving_pid, wait_for, worker_pid
from gateway.testing.server import TestGateway

from .conftest import Mqtt, Node


def _on_worker(node: Node, mqtt: Mqtt, index: int) -> int:
    """Connect ``mqtt`` through worker ``index``; check that worker really serves it."""
    info = node.gw.info
    with pinned_to(info, index):
        port = mqtt.connect()
    pid = serving_pid(node.gw.ports["mqtt_tls"], port, [worker_pid(info, i) for i in (1, 2)])
    assert pid == worker_pid(info, index)
    return port


def _long_poll(
    node: Node, token: str, index: int, timeout_ms: int = 20_000
) -> concurrent.futures.Future[httpx.Response]:
    """Start an HTTP long-poll for ``data_out`` held by worker ``index``; returns once the
    worker holds it (the request is on its way)."""
    client = node.https()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    started = threading.Event()

    def poll() -> httpx.Response:
        try:
            started.set()
            return client.get(
                "/onep:v1/stack/alias?data_out",
                headers={"X-Exosite-CIK": token, "Request-Timeout": str(timeout_ms)},
            )
        finally:
            client.close()

    info = node.gw.info
    with pinned_to(info, index):
        future = pool.submit(poll)
        started.wait(5)
        # the TCP connection is accepted (by the only running worker) before we continue
        wait_for(lambda: _tls_peers(node, index), 10, "the long-poll's connection")
    pool.shutdown(wait=False)
    return future


def _tls_peers(node: Node, index: int) -> bool:
    """Whether worker ``index`` holds a connection on the HTTPS port."""
    import os

    port = node.gw.ports["tls"]
    pid = worker_pid(node.gw.info, index)
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            listening_port = int(parts[1].rsplit(":", 1)[1], 16)
            if listening_port == port and parts[3] == "01" and int(parts[9]) in inodes:
                return True
    return False


def _events(node: Node, identity: str) -> list[dict[str, object]]:
    r = node.api.get("/connectors/demo/events", params={"limit": 1000})
    return [e for e in r.json()["items"] if e["identity"] == identity]


def test_set_value_reaches_mqtt_and_long_poll_on_other_workers(node: Node) -> None:
    token = node.device("xw-push")
    mqtt = Mqtt(node, token)
    _on_worker(node, mqtt, 1)
    poll = _long_poll(node, token, 2)
    r = node.api.patch("/connectors/demo/devices/xw-push/state", json={"data_out": "go"})
    assert r.status_code == 200, r.text
    wait_for(lambda: mqtt.messages, 10, "the MQTT push")
    topic, payload = mqtt.messages[0]
    assert re.fullmatch(r"\$resource/data_out/\d+", topic)
    assert payload == b"go"
    answer = poll.result(10)
    assert (answer.status_code, answer.text) == (200, "data_out=go")
    mqtt.stop()


def test_duplicate_connection_on_another_worker_closes_the_first(node: Node) -> None:
    token = node.device("xw-dup")
    first = Mqtt(node, token)
    _on_worker(node, first, 1)
    wait_for(lambda: [e for e in _events(node, "xw-dup") if e["type"] == "connect"], 10, "connect")
    second = Mqtt(node, token)
    _on_worker(node, second, 2)
    assert first.disconnected.wait(10), "the first connection was not closed"
    assert second.publish("from-second")
    assert not second.disconnected.is_set()

    def closed_as_duplicate() -> bool:
        return any(
            e["type"] == "disconnect" and e["reason"] == "duplicate_connection"
            for e in _events(node, "xw-dup")
        )

    wait_for(closed_as_duplicate, 10, "the disconnect event")
    assert node.api.get("/connectors/demo/devices/xw-dup").json()["online"] is True
    second.stop()
    first.c.loop_stop()


@pytest.mark.parametrize(
    ("change", "reason", "status"),
    [
        ({"locked": True}, "locked", 403),
        ({"reprovision": True}, "credentials_reset", 401),
        (None, "deleted", 401),
    ],
)
def test_lock_delete_reprovision_end_sessions_on_every_worker(
    node: Node, change: dict[str, bool] | None, reason: str, status: int
) -> None:
    identity = f"xw-{reason}"
    token = node.device(identity)
    mqtt = Mqtt(node, token)
    _on_worker(node, mqtt, 1)
    wait_for(lambda: [e for e in _events(node, identity) if e["type"] == "connect"], 10, "connect")
    poll = _long_poll(node, token, 2)
    t0 = time.monotonic()
    if change is None:
        r = node.api.delete(f"/connectors/demo/devices/{identity}")
    else:
        r = node.api.patch(f"/connectors/demo/devices/{identity}", json=change)
    assert r.status_code in (200, 204), r.text
    assert mqtt.disconnected.wait(5), "the MQTT session was not closed"
    answer = poll.result(5)
    assert time.monotonic() - t0 < 5
    assert answer.status_code == status

    # the session ended with the reason; nothing the device sends now is stored
    def ended() -> bool:
        return any(
            e["type"] == "disconnect" and e["reason"] == reason for e in _events(node, identity)
        )

    wait_for(ended, 10, "the disconnect event")
    mqtt.c.loop_stop()
    with node.https() as https:
        w = https.post(
            "/onep:v1/stack/alias", content=b"data_in=late", headers={"X-Exosite-CIK": token}
        )
    assert w.status_code == status
    assert not [e for e in _events(node, identity) if e["type"] == "data_in"]


def test_live_log_shows_debug_records_of_every_worker(node: Node) -> None:
    """The live log (served by the store owner) shows a refused CONNECT on each worker."""
    lines: list[dict[str, object]] = []
    ready = threading.Event()
    stop = threading.Event()

    def tail() -> None:
        api = httpx.Client(base_url=node.gw.api, headers=node.gw.admin_headers, timeout=30)
        with api, api.stream("GET", "/connectors/demo/logs", params={"kind": "debug"}) as r:
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    lines.append(json.loads(line[6:]))
                if stop.is_set():
                    return

    t = threading.Thread(target=tail, daemon=True)
    t.start()
    assert ready.wait(10)
    time.sleep(0.3)  # the interest reaches the workers (an Interest frame each)
    for index in (1, 2):
        bad = Mqtt(node, f"{index}" * 40)
        with pinned_to(node.gw.info, index):
            bad.c.connect(bad.host, bad.port)
            bad.c.loop_start()
            assert bad.connected.wait(10)
        bad.c.loop_stop()
    refused = wait_for(
        lambda: (
            [r for r in lines if r["event"] == "connect_refused"]
            if len([r for r in lines if r["event"] == "connect_refused"]) >= 2
            else None
        ),
        10,
        "two connect_refused records",
    )
    assert len(refused) >= 2  # type: ignore[arg-type]
    stop.set()


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_and_connector_stats_show_the_whole_node(node: Node) -> None:
    clients = []
    before = _metric(
        httpx.get(f"http://127.0.0.1:{node.gw.ports['api']}/metrics").text, "gateway_mqtt_sessions"
    )
    stats0 = node.api.get("/connectors/demo/stats").json()
    for index in (1, 2):
        mqtt = Mqtt(node, node.device(f"xw-metrics-{index}"))
        _on_worker(node, mqtt, index)
        assert mqtt.publish("1")
        clients.append(mqtt)
    text = httpx.get(f"http://127.0.0.1:{node.gw.ports['api']}/metrics").text
    assert _metric(text, "gateway_mqtt_sessions") == before + 2
    assert _metric(text, "gateway_connections") >= 2
    # the console's per-connector counters (GET …/stats) are the node's too
    stats = node.api.get("/connectors/demo/stats").json()
    mqtt_conns = [s.get("connections", {}).get("mqtt", 0) for s in (stats0, stats)]
    assert mqtt_conns[1] >= mqtt_conns[0] + 2, (stats0, stats)
    assert stats["writes"] >= stats0["writes"] + 2
    for c in clients:
        c.stop()


def test_registry_changes_reach_every_worker(node: Node) -> None:
    """A resource created through the management API is known to both workers at once."""
    r = node.api.post("/connectors/demo/resources", json={"alias": "xw_new", "format": "number"})
    assert r.status_code == 201, r.text
    for index in (1, 2):
        token = node.device(f"xw-reg-{index}")
        with pinned_to(node.gw.info, index), node.https() as https:
            w = https.post(
                "/onep:v1/stack/alias",
                content=b"xw_new=notanumber",
                headers={"X-Exosite-CIK": token},
            )
            assert w.status_code == 400, w.text  # the new resource's format is checked
            w = https.post(
                "/onep:v1/stack/alias", content=b"xw_new=42", headers={"X-Exosite-CIK": token}
            )
            assert w.status_code == 204
        state = node.api.get(f"/connectors/demo/devices/xw-reg-{index}/state").json()
        assert state["xw_new"]["reported"] == "42"


def test_run_json_lists_the_processes(node: Node) -> None:
    info: TestGateway = node.gw
    roles = sorted((p.role, p.index) for p in info.info.processes)
    assert roles == [("store", 0), ("worker", 1), ("worker", 2)]
    assert info.info.pid == node.proc.pid
    assert info.info.workers == 2


def _password_cache(node: Node) -> tuple[float, float]:
    """(hits, proofs held) summed over the node's processes, from ``/metrics``."""
    text = httpx.get(f"http://127.0.0.1:{node.gw.ports['api']}/metrics", timeout=10).text
    hits = _metric(text, 'gateway_password_cache_total{outcome="hit"}')
    return hits, _metric(text, "gateway_password_cache_entries")


def test_password_reset_and_lock_reach_every_worker(node: Node) -> None:
    """Each worker remembers the proof of a password device; a reset, then a lock, through
    the management API refuse the next request on each worker's open keep-alive connection,
    and the committed events drop both workers' proofs."""
    import base64

    identity, one = "xw-pw", "/connectors/demo/devices/xw-pw"

    def add(password: str) -> dict[str, str]:
        r = node.api.post(
            "/connectors/demo/devices",
            json={"identity": identity, "auth": {"type": "password", "key": password}},
        )
        assert r.status_code == 201, r.text
        basic = base64.b64encode(f"{identity}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    def write(https: httpx.Client, headers: dict[str, str]) -> int:
        return https.post(
            "/onep:v1/stack/alias", content=b"data_in=pw", headers=headers
        ).status_code

    def connect_both(headers: dict[str, str]) -> list[httpx.Client]:
        """A keep-alive connection to each worker, each with a scrypt check then a hit."""
        clients = []
        for index in (1, 2):
            https = node.https()
            clients.append(https)
            with pinned_to(node.gw.info, index):
                assert write(https, headers) == 204  # scrypt, on the only running worker
            assert _tls_peers(node, index)
            assert write(https, headers) == 204  # the proof, on the same connection
        return clients

    auth = add("correct-horse-battery-staple")
    hits0, held0 = _password_cache(node)
    assert held0 == 0
    clients = connect_both(auth)
    try:
        hits, held = _password_cache(node)
        assert (hits - hits0, held) == (2, 2)  # one proof per worker, one hit each
        r = node.api.patch(one, json={"reprovision": True})
        assert r.status_code == 200, r.text
        for https in clients:
            assert write(https, auth) == 401
        wait_for(lambda: _password_cache(node)[1] == 0, 10, "both workers dropping the proof")
        for https in clients:
            https.close()

        assert node.api.delete(one).status_code == 204
        auth = add("another-long-device-password")
        clients = connect_both(auth)
        assert _password_cache(node)[1] == 2
        r = node.api.patch(one, json={"locked": True})
        assert r.status_code == 200, r.text
        for https in clients:
            assert write(https, auth) == 403
        wait_for(lambda: _password_cache(node)[1] == 0, 10, "both workers dropping the proof")
    finally:
        for https in clients:
            https.close()
