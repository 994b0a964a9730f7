"""What the web console needs from the management side: ``GET …/stats`` (live counters), the
actions that end a device's MQTT session (lock, credentials reset, delete; docs/protocol.md
§12 item 24), and the console's files served whole from the gateway itself.

Devices are raw MQTT 3.1.1 sockets on the dev plain port (``gateway.testing.mqtt_bytes``),
provisioned with pre-shared tokens through the API; the counts are exact because the stats
test compares before and after on a connector nothing else touches at the same time.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from gateway.testing.mqtt_bytes import gen_connack, gen_connect, gen_puback, gen_publish
from gateway.testing.server import TestGateway

DISCONNECT_EVENT_WAIT_S = 10.0


def wait_for(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DISCONNECT_EVENT_WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextmanager
def mqtt_session(gw: TestGateway, token: str) -> Iterator[socket.socket]:
    """A connected device on the plain dev MQTT port (the demo connector)."""
    with socket.create_connection(("127.0.0.1", gw.ports["dev_mqtt"]), timeout=10) as sock:
        sock.sendall(gen_connect("", username="", password=token))
        assert _recv(sock, 4) == gen_connack(0)
        yield sock


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf


def wait_closed_by_server(sock: socket.socket) -> None:
    """Return once the gateway closed the connection (EOF or reset); a timeout fails."""
    sock.settimeout(DISCONNECT_EVENT_WAIT_S)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def provision(api: httpx.Client, identity: str) -> str:
    token = secrets.token_hex(20)
    r = api.post(
        "/api/v1/connectors/demo/devices",
        json={"identity": identity, "auth": {"type": "token", "key": token}},
    )
    assert r.status_code == 201, r.text
    return token


def stats(api: httpx.Client, cid: str = "demo") -> dict[str, Any]:
    r = api.get(f"/api/v1/connectors/{cid}/stats")
    assert r.status_code == 200, r.text
    return dict(r.json())


def disconnect_reasons(api: httpx.Client, identity: str) -> list[str | None]:
    items = api.get("/api/v1/connectors/demo/events", params={"limit": 1000}).json()["items"]
    return [e["reason"] for e in items if e["type"] == "disconnect" and e["identity"] == identity]


def test_stats_counts_devices_connections_writes_and_refusals(
    gw: TestGateway, api: httpx.Client
) -> None:
    r = api.post("/api/v1/connectors", json={"name": "Stats", "id": "statsco"})
    assert r.status_code == 201, r.text
    empty = stats(api, "statsco")
    assert empty["connector_id"] == "statsco"
    assert empty["devices"] == {
        "total": 0,
        "online": 0,
        "locked": 0,
        "provisioned": 0,
        "whitelisted": 0,
        "reprovision": 0,
    }
    assert empty["connections"] == {}
    assert empty["writes"] == 0
    assert empty["refused"] == {}
    assert isinstance(empty["started"], int)
    assert isinstance(empty["timestamp"], int)
    assert empty["started"] <= empty["timestamp"]
    assert api.get("/api/v1/connectors/nosuch/stats").status_code == 404

    before = stats(api)
    token = provision(api, "stats-1")
    api.post("/api/v1/connectors/demo/devices", json={"identity": "stats-2", "locked": True})
    with mqtt_session(gw, token) as sock:
        sock.sendall(
            gen_publish("$resource/data_in", "1", qos=1, mid=1)
            + gen_publish("$resource/data_in", "2", qos=1, mid=2)
        )
        assert _recv(sock, 8) == gen_puback(1) + gen_puback(2)
        # the device counts are reused for up to COUNTS_TTL_S: poll
        wait_for(
            lambda: stats(api)["devices"]["online"] == before["devices"]["online"] + 1, "online"
        )
        during = stats(api)
        assert during["connections"] == {"mqtt": 1}
        assert during["writes"] == before["writes"] + 2
        assert (
            during["writes_by_protocol"]["mqtt"] == before["writes_by_protocol"].get("mqtt", 0) + 2
        )
        d, b = during["devices"], before["devices"]
        assert d["total"] == b["total"] + 2
        assert d["provisioned"] == b["provisioned"] + 1
        assert d["whitelisted"] == b["whitelisted"] + 1
        assert d["locked"] == b["locked"] + 1
    # A refused CONNECT counts for the connector, by reason.
    with socket.create_connection(("127.0.0.1", gw.ports["dev_mqtt"]), timeout=10) as sock:
        sock.sendall(gen_connect("", username="", password="0" * 40))
        assert _recv(sock, 4)[:3] == gen_connack(0)[:3]
    wait_for(
        lambda: (
            stats(api)["refused"].get("not_authenticated", 0)
            == before["refused"].get("not_authenticated", 0) + 1
        ),
        "the refusal counted",
    )
    assert stats(api, "statsco")["refused"] == {}  # another connector's refusals stay there


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"locked": True}, "locked"), ({"reprovision": True}, "credentials_reset")],
)
def test_lock_and_credentials_reset_end_the_session(
    gw: TestGateway, api: httpx.Client, change: dict[str, bool], reason: str
) -> None:
    identity = f"kick-{reason}"
    token = provision(api, identity)
    with mqtt_session(gw, token) as sock:
        wait_for(
            lambda: api.get(f"/api/v1/connectors/demo/devices/{identity}").json()["online"],
            "online",
        )
        r = api.patch(f"/api/v1/connectors/demo/devices/{identity}", json=change)
        assert r.status_code == 200, r.text
        wait_closed_by_server(sock)
    wait_for(lambda: disconnect_reasons(api, identity) == [reason], "the disconnect event")
    assert api.get(f"/api/v1/connectors/demo/devices/{identity}").json()["online"] is False
    # and the device cannot come back with what it had
    with socket.create_connection(("127.0.0.1", gw.ports["dev_mqtt"]), timeout=10) as sock:
        sock.sendall(gen_connect("", username="", password=token))
        code = _recv(sock, 4)[3]
        assert code != 0


def test_unlock_keeps_the_session_and_delete_ends_it(gw: TestGateway, api: httpx.Client) -> None:
    token = provision(api, "kick-delete")
    with mqtt_session(gw, token) as sock:
        r = api.patch("/api/v1/connectors/demo/devices/kick-delete", json={"locked": False})
        assert r.status_code == 200
        sock.sendall(gen_publish("$resource/data_in", "still here", qos=1, mid=7))
        assert _recv(sock, 4) == gen_puback(7)  # unlocking an unlocked device kicks nobody
        assert api.delete("/api/v1/connectors/demo/devices/kick-delete").status_code == 204
        wait_closed_by_server(sock)
    wait_for(lambda: disconnect_reasons(api, "kick-delete") == ["deleted"], "the disconnect event")
    assert api.delete("/api/v1/connectors/demo/devices/kick-delete").status_code == 404
    assert api.delete("/api/v1/connectors/nosuch/devices/kick-delete").status_code == 404


def test_console_is_served_whole_and_offline(gw: TestGateway) -> None:
    """Every file the console loads is served by the gateway itself (no CDN, nothing from
    elsewhere), scripts as JavaScript modules, each answer to be revalidated."""
    from gateway.mgmt.console import CONSOLE_DIR

    base = f"http://127.0.0.1:{gw.ports['api']}/console/"
    index = httpx.get(base, timeout=10)
    assert index.status_code == 200
    assert index.headers["cache-control"] == "no-cache"
    wanted = set(re.findall(r'(?:src|href)="([^"#:]+)"', index.text))
    for js in CONSOLE_DIR.glob("*.js"):
        wanted |= {
            a or b
            for a, b in re.findall(r'from "\./([^"]+)"|import\("\./([^"]+)"\)', js.read_text())
        }
    wanted.discard("")
    assert {"app.js", "style.css", "lib.js", "chart.js", "identity.js"} <= wanted
    for name in sorted(wanted):
        r = httpx.get(base + name, timeout=10)
        assert r.status_code == 200, name
        assert r.headers["cache-control"] == "no-cache", name
        if name.endswith(".js"):
            assert r.headers["content-type"].split(";")[0] in (
                "text/javascript",
                "application/javascript",
            ), name
    for f in CONSOLE_DIR.iterdir():
        text = f.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (f.name, urls)
