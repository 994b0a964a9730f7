"""The durable forensic timeline (docs/protocol.md §6.5, §6.6): refused connections,
activations and writes each leave one event with a stable reason code, and ``GET …/events``
finds them newest first, by identity, type, address and time; unknown query parameters are
a 400 on every route.

The refusals are real: raw MQTT 3.1.1 bytes on the dev plain port
(``gateway.testing.mqtt_bytes``), HTTP on the dev plain port, a TLS handshake abandoned
after its ClientHello on the device TLS port.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.testing.mqtt_bytes import gen_connack, gen_connect, gen_disconnect, gen_publish
from gateway.testing.server import TestGateway

WAIT_S = 10.0
EVENTS = "/api/v1/connectors/demo/events"


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def newest(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = api.get(EVENTS, params={"before": -1, "limit": 1000, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf


def http_dev(gw: TestGateway, path: str, body: str, token: str | None = None) -> httpx.Response:
    headers = {
        "Host": gw.devmode_fqdn(),
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
    }
    if token:
        headers["X-Exosite-CIK"] = token
    return httpx.post(
        f"http://127.0.0.1:{gw.ports['dev_http']}{path}", content=body, headers=headers, timeout=10
    )


def test_refusals_are_durable_events_with_reason_codes(gw: TestGateway, api: httpx.Client) -> None:
    token = secrets.token_hex(20)
    r = api.post(
        "/api/v1/connectors/demo/devices",
        json={"identity": "forensic-1", "auth": {"type": "token", "key": token}},
    )
    assert r.status_code == 201, r.text
    # MQTT CONNECT with a bad token, then a write to a topic that is no resource topic
    with socket.create_connection(("127.0.0.1", gw.ports["dev_mqtt"]), timeout=10) as sock:
        sock.sendall(gen_connect("", username="", password="0" * 40))
        assert _recv(sock, 4)[3] != 0
    with socket.create_connection(("127.0.0.1", gw.ports["dev_mqtt"]), timeout=10) as sock:
        sock.sendall(gen_connect("", username="", password=token))
        assert _recv(sock, 4) == gen_connack(0)
        sock.sendall(gen_publish("$resource/data_in/too/deep", "1", qos=0) + gen_disconnect())
        sock.settimeout(WAIT_S)
        while sock.recv(65536):  # the gateway ends the session after the DISCONNECT
            pass
    # HTTP: a second activation of a provisioned identity, a write with a bad token
    assert http_dev(gw, "/provision/activate", "id=forensic-1").status_code == 409
    assert http_dev(gw, "/onep:v1/stack/alias", "data_in=1", token="f" * 40).status_code == 401
    # TLS: a ClientHello naming the connector, then the connection closes (the hello is
    # made on memory BIOs, so no answer of the gateway can complete the handshake first)
    hello = ssl.create_default_context(cafile=gw.ca).wrap_bio(
        ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=gw.fqdn()
    )
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    with socket.create_connection(("127.0.0.1", gw.ports["tls"]), timeout=10) as raw:
        raw.sendall(out.read())

    def found() -> dict[tuple[str, str], dict[str, Any]]:
        kinds = ("connection_refused", "activation_refused", "write_refused")
        return {(e["type"], e["reason"]): e for e in newest(api, type=kinds)}

    want = {
        ("connection_refused", "not_authenticated"),
        ("write_refused", "bad_request"),
        ("activation_refused", "already_provisioned"),
        ("write_refused", "not_authenticated"),
        ("connection_refused", "ssl_closed"),
    }
    events = wait_for(lambda: (f := found()) and want <= set(f) and f, "the refusal events")
    mqtt_write = events[("write_refused", "bad_request")]
    assert mqtt_write["identity"] == "forensic-1"
    assert mqtt_write["protocol"] == "murano:v1/mqtt"
    assert mqtt_write["ip"] == "127.0.0.1"
    assert mqtt_write["payload"]["event"] == "write_rejected"
    http_write = events[("write_refused", "not_authenticated")]
    assert http_write["protocol"] == "onep:v1/http"
    assert http_write["payload"]["detail"].startswith("POST /onep:v1/stack/alias -> 401")
    assert events[("activation_refused", "already_provisioned")]["payload"]["event"] == (
        "http_refused"
    )


def test_events_newest_first_filtered_and_paged(gw: TestGateway, api: httpx.Client) -> None:
    token = secrets.token_hex(20)
    r = api.post(
        "/api/v1/connectors/demo/devices",
        json={"identity": "pager-1", "auth": {"type": "token", "key": token}},
    )
    assert r.status_code == 201
    start = int(time.time() * 1e6)
    with socket.create_connection(("127.0.0.1", gw.ports["dev_mqtt"]), timeout=10) as sock:
        sock.sendall(gen_connect("", username="", password=token))
        assert _recv(sock, 4) == gen_connack(0)
        for i in range(7):
            sock.sendall(gen_publish("$resource/data_in", str(i), qos=1, mid=i + 1))
            _recv(sock, 4)
    mine = wait_for(
        lambda: len(ev := newest(api, identity="pager-1", type="data_in")) == 7 and ev, "writes"
    )
    values = [e["payload"][0]["values"]["data_in"] for e in mine]
    assert values == [str(i) for i in reversed(range(7))]  # newest first
    # paging backwards three at a time, with the filters
    seen, before = [], -1
    while True:
        page = api.get(
            EVENTS, params={"before": before, "limit": 3, "identity": "pager-1", "type": "data_in"}
        ).json()
        seen += [e["seq"] for e in page["items"]]
        if page["next"] is None:
            break
        assert page["next"] == page["items"][-1]["seq"]
        before = page["next"]
    assert seen == [e["seq"] for e in mine]
    # several types at once; the connect of this device comes before its writes
    both = newest(api, identity="pager-1", type=["connect", "data_in"])
    assert [e["type"] for e in both][-1] == "connect"
    assert len(both) == 8
    # time: nothing of this device before the test began; all of it since
    assert newest(api, identity="pager-1", until=start - 1) == []
    assert len(newest(api, identity="pager-1", since=start, type="data_in")) == 7
    # address
    assert {e["ip"] for e in newest(api, identity="pager-1")} == {"127.0.0.1"}
    assert newest(api, identity="pager-1", ip="192.0.2.1") == []
    # forwards with the same filters, oldest first
    fwd = api.get(EVENTS, params={"after": 0, "identity": "pager-1", "type": "data_in"}).json()
    assert [e["seq"] for e in fwd["items"]] == [e["seq"] for e in reversed(mine)]
    assert fwd["next"] == mine[0]["seq"]
    # after bounds a backwards page from below: the three writes newer than the fourth
    window = api.get(
        EVENTS,
        params={"before": -1, "after": mine[3]["seq"], "identity": "pager-1", "type": "data_in"},
    ).json()
    assert [e["seq"] for e in window["items"]] == [e["seq"] for e in mine[:3]]
    assert window["next"] is None  # nothing older within the window
    # "from now", newest first: nothing yet, so it waits (briefly) and answers empty
    t0 = time.monotonic()
    r = api.get(EVENTS, params={"before": -1, "after": -1, "wait": 0.3, "identity": "pager-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "next": None}
    assert time.monotonic() - t0 >= 0.3


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"befor": "-1"}, "unknown query parameter 'befor'"),
        ({"type": "data_inn"}, "unknown event type 'data_inn'"),
        ({"ip": "300.1.1.1"}, "ip must be an IPv4 or IPv6 address"),
        ({"since": "10", "until": "5"}, "since must not be after until"),
        ({"before": "-2"}, "before must be"),
    ],
)
def test_event_queries_refused(api: httpx.Client, params: dict[str, str], needle: str) -> None:
    r = api.get(EVENTS, params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request"
    assert needle in r.json()["message"]


def test_unknown_query_parameters_are_refused_everywhere(api: httpx.Client) -> None:
    for path in ("/api/v1/connectors", "/api/v1/connectors/demo/devices", "/api/v1/health"):
        r = api.get(path, params={"statuss": "online"})
        assert r.status_code == 400, (path, r.text)
        assert "unknown query parameter 'statuss'" in r.json()["message"]
    assert api.get("/api/v1/connectors/demo/devices", params={"status": "online"}).is_success
