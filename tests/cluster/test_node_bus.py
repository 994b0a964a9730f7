"""A node on the cluster bus, without the rest of the cluster: ``gateway serve --bus nats://``
(one process, and a node of two workers) against a real nats-server, with this test as the
"other node" (a :class:`~gateway.bus.cluster.ClusterBus` in the test's Trio run).  What the
other node publishes reaches the device on this one (a push, a newer ``connect``: the session
ends with ``duplicate_connection``, a lock: it ends with ``locked``), and what this node
commits reaches the other node, with connection ids that name the node."""

from __future__ import annotations

import secrets
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
import trio

from gateway.bus.api import LocalBus
from gateway.bus.cluster import ClusterBus
from gateway.store.api import CommittedEvent
from gateway.testing.hosts import HostMap
from gateway.testing.server import TestGateway, gateway_process

from .test_bus import Nats, RecordingInbox

pytestmark = pytest.mark.needs_tool


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def node(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pki_dir: Path,
    hosts: HostMap,
) -> Iterator[tuple[TestGateway, Nats]]:
    root = tmp_path_factory.mktemp("nodebus")
    nats = Nats(root / "js")
    nats.start()
    data = root / "data"
    shutil.copytree(pki_dir, data / "tls")
    extra = ["--bus", nats.url, "--node-name", "n1"]
    try:
        with gateway_process(data, dev=False, workers=request.param, extra=extra, timeout=60) as (
            _proc,
            gw,
        ):
            if not hosts.map(gw.fqdn()):
                pytest.skip(f"{gw.fqdn()} cannot be mapped to 127.0.0.1 (needs root)")
            yield gw, nats
    finally:
        nats.kill()


class Device:
    def __init__(self, gw: TestGateway, identity: str) -> None:
        self.identity = identity
        token = secrets.token_hex(20)
        with httpx.Client(base_url=gw.api, headers=gw.admin_headers) as api:
            r = api.post(
                "/connectors/demo/devices",
                json={"identity": identity, "auth": {"type": "token", "key": token}},
            )
            assert r.status_code == 201, r.text
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.username_pw_set("", token)
        self.c.tls_set_context(ssl.create_default_context(cafile=gw.ca))
        self.c.reconnect_delay_set(60, 60)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.got_message = threading.Event()
        self.c.on_connect = lambda *a: self.connected.set()
        self.c.on_disconnect = lambda *a: self.disconnected.set()
        self.c.on_message = self._on_message
        self.c.connect(gw.fqdn(), gw.ports["mqtt_tls"], keepalive=60)
        self.c.loop_start()

    def _on_message(self, client: object, userdata: object, m: paho.MQTTMessage) -> None:
        self.messages.append((m.topic, m.payload))
        self.got_message.set()

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


async def _wait(ev: threading.Event, what: str) -> None:
    assert await trio.to_thread.run_sync(ev.wait, 10), what


def _event(kind: str, identity: str, seq: int, **kw: object) -> CommittedEvent:
    now = int(time.time() * 1e6)
    return CommittedEvent(
        "demo",
        seq,
        now,
        kind,
        identity,
        kw.get("connection_id"),  # type: ignore[arg-type]
        None,
        "mqtt",
        None,
        kw.get("payload"),
    )


async def test_events_cross_between_this_node_and_another(
    node: tuple[TestGateway, Nats],
) -> None:
    gw, nats = node
    other = ClusterBus(nats.url, "other", LocalBus())
    inbox = RecordingInbox()
    async with trio.open_nursery() as nursery:
        await nursery.start(other.run, inbox)
        dev = Device(gw, f"nb-{secrets.token_hex(3)}")
        await _wait(dev.connected, "CONNACK")

        # this node's commit reaches the other node; its connection id names the node
        def connected() -> bool:
            return any(e.type == "connect" and e.identity == dev.identity for e in inbox.got)

        await inbox.wait(connected)
        connect = next(e for e in inbox.got if e.type == "connect" and e.identity == dev.identity)
        assert str(connect.connection_id).startswith("n1.")

        # a value set on the other node is pushed to the device here
        ts = int(time.time() * 1e6)
        payload = [{"timestamp": ts, "values": {"data_out": "from-other"}}]
        other.publish_events([_event("data_out", dev.identity, 10**9, payload=payload)])
        await _wait(dev.got_message, "the push from the other node")
        assert dev.messages[0] == (f"$resource/data_out/{ts}", b"from-other")

        # a newer connect committed on the other node closes the session here
        other.publish_events(
            [_event("connect", dev.identity, 10**9 + 1, connection_id="other.w1-abc")]
        )
        await _wait(dev.disconnected, "duplicate_connection")
        dev.c.loop_stop()

        # a lock committed on the other node ends a session here
        locked = Device(gw, f"nb-lock-{secrets.token_hex(3)}")
        await _wait(locked.connected, "CONNACK")
        await inbox.wait(
            lambda: any(e.type == "connect" and e.identity == locked.identity for e in inbox.got)
        )
        other.publish_events([_event("locked", locked.identity, 10**9 + 2)])
        await _wait(locked.disconnected, "the lock kick")
        locked.c.loop_stop()

        # each session ended with the reason the other node's event gives
        for identity, reason in (
            (dev.identity, "duplicate_connection"),
            (locked.identity, "locked"),
        ):
            await inbox.wait(
                lambda i=identity, r=reason: any(
                    e.type == "disconnect" and e.identity == i and e.reason == r for e in inbox.got
                )
            )
        nursery.cancel_scope.cancel()
