"""paho-mqtt 2.x against a live gateway: QoS 0/1, keep-alive expiry, clean disconnect,
takeover, TLS with ALPN "mqtt" and without ALPN (docs/protocol.md §3, §12 items 7-9)."""

from __future__ import annotations

import inspect
import secrets
import ssl
import threading
from collections.abc import Awaitable

import paho.mqtt.client as paho
import pytest
import trio

from gateway.testing.server import TestGateway


@pytest.fixture
async def token(gw: TestGateway) -> str:
    tok = secrets.token_hex(20)
    await gw.services.devices.add("demo", "paho-1", auth_type="token", key=tok)
    return tok


class Client:
    """A paho client with its network loop in paho's thread; events as threading.Events."""

    def __init__(self, token: str, *, client_id: str = "", keepalive: int = 60) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.username_pw_set("", token)
        self.keepalive = keepalive
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.rc: object = None
        self.messages: list[tuple[str, bytes]] = []
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.disconnected.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))

    def _on_connect(self, client, userdata, flags, rc, props=None):
        self.rc = rc
        self.connected.set()

    def tls(self, ca: str, alpn: list[str] | None) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.c.tls_set_context(ctx)

    async def connect(self, host: str, port: int) -> None:
        def run() -> None:
            self.c.connect(host, port, keepalive=self.keepalive)
            self.c.loop_start()
            assert self.connected.wait(10)

        await trio.to_thread.run_sync(run)

    async def publish(self, topic: str, payload: str, qos: int) -> None:
        info = self.c.publish(topic, payload, qos=qos)
        await trio.to_thread.run_sync(info.wait_for_publish, 10)
        assert info.is_published()

    async def stop(self) -> None:
        def run() -> None:
            self.c.disconnect()
            self.c.loop_stop()

        await trio.to_thread.run_sync(run)


async def _eventually(predicate, timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` (plain, or async: a store read)."""
    for _ in range(int(timeout_s / 0.05)):
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await trio.sleep(0.05)
    raise AssertionError("condition not reached")


async def _reported(gw, identity: str) -> str | None:
    return (await gw.services.state.get("demo", identity))["data_in"].reported


async def _is(value: Awaitable[object], want: object) -> bool:
    return await value == want


async def _offline(gw, identity: str) -> bool:
    return not (await gw.services.devices.get("demo", identity)).online


async def test_qos0_and_qos1_publish(gw, token):
    c = Client(token, client_id="paho-random-id")
    await c.connect("127.0.0.1", gw.ports["dev_mqtt"])
    assert c.rc == 0
    await c.publish("$resource/data_in", "q1-value", qos=1)  # returns after PUBACK
    assert (await gw.services.state.get("demo", "paho-1"))["data_in"].reported == "q1-value"
    await c.publish("$resource/data_in", "q0-value", qos=0)
    await _eventually(lambda: _is(_reported(gw, "paho-1"), "q0-value"))
    await c.stop()
    await _eventually(lambda: _offline(gw, "paho-1"))


async def test_push_and_bad_token(gw, token):
    c = Client(token)
    await c.connect("127.0.0.1", gw.ports["dev_mqtt"])
    await gw.services.state.set_values("demo", "paho-1", {"data_out": "go"})
    await _eventually(lambda: c.messages)
    topic, payload = c.messages[0]
    assert topic.startswith("$resource/data_out/")
    assert payload == b"go"
    await c.stop()
    bad = Client("f" * 40)
    await bad.connect("127.0.0.1", gw.ports["dev_mqtt"])
    assert str(bad.rc) == "Bad user name or password"  # CONNACK 4 (paho maps it to v5 names)
    await bad.stop()


async def test_keepalive_expiry(gw, token):
    """A client that stops its loop (no PINGREQ) is dropped after 1.5 × keep-alive."""
    c = Client(token, keepalive=1)
    await c.connect("127.0.0.1", gw.ports["dev_mqtt"])
    await trio.to_thread.run_sync(c.c.loop_stop)
    start = trio.current_time()
    await _eventually(lambda: _offline(gw, "paho-1"), 6)
    assert 1.2 <= trio.current_time() - start < 4
    # paho has no public way to close its sockets once its loop was stopped by hand
    c.c._reset_sockets()


async def test_takeover(gw, token):
    first = Client(token)
    await first.connect("127.0.0.1", gw.ports["dev_mqtt"])
    first.c.reconnect_delay_set(60, 60)  # do not fight back
    second = Client(token)
    await second.connect("127.0.0.1", gw.ports["dev_mqtt"])
    assert await trio.to_thread.run_sync(first.disconnected.wait, 10)
    await second.publish("$resource/data_in", "from-second", qos=1)
    assert (await gw.services.devices.get("demo", "paho-1")).online
    await second.stop()
    await trio.to_thread.run_sync(first.c.loop_stop)
    first.c._reset_sockets()


@pytest.mark.parametrize(
    ("port_key", "alpn"), [("tls", ["mqtt"]), ("mqtt_tls", None), ("tls", None)]
)
async def test_tls(gw, token, port_key, alpn, resolve):
    """Multi-protocol port with ALPN "mqtt", the MQTT port without ALPN, and the
    multi-protocol port without ALPN (first-byte sniffing, §12 item 7)."""
    resolve(gw.fqdn())
    c = Client(token)
    c.tls(gw.ca, alpn)
    await c.connect(gw.fqdn(), gw.ports[port_key])
    assert c.rc == 0
    await c.publish("$resource/data_in", f"tls-{port_key}", qos=1)
    assert (await gw.services.state.get("demo", "paho-1"))["data_in"].reported == f"tls-{port_key}"
    await c.stop()
