"""A multi-process node (``gateway serve --workers 2``) as a subprocess, and real clients
for it: paho over MQTT/TLS and httpx over HTTPS (docs/architecture.md "The node")."""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest

from gateway.testing.hosts import HostMap
from gateway.testing.server import TestGateway, gateway_process


class Node:
    """A running node: the supervisor process, its handles, an admin API client."""

    def __init__(self, proc: subprocess.Popen[bytes], gw: TestGateway, data: Path) -> None:
        self.proc = proc
        self.gw = gw
        self.data = data
        self.api = httpx.Client(base_url=gw.api, headers=gw.admin_headers, timeout=30)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.close()

    def device(self, identity: str) -> str:
        """A provisioned device of the demo connector; returns its token."""
        token = secrets.token_hex(20)
        r = self.api.post(
            "/connectors/demo/devices",
            json={"identity": identity, "auth": {"type": "token", "key": token}},
        )
        assert r.status_code == 201, r.text
        return token

    def https(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.gw.ca)
        return httpx.Client(
            base_url=f"https://{self.gw.fqdn()}:{self.gw.ports['tls']}", verify=ctx, timeout=30
        )


class Mqtt:
    """paho over TLS with its network loop in paho's thread; events as threading.Events."""

    def __init__(self, node: Node, token: str) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.username_pw_set("", token)
        self.c.tls_set_context(ssl.create_default_context(cafile=node.gw.ca))
        self.c.reconnect_delay_set(60, 60)  # a kicked client must not come back by itself
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.rc: object = None
        self.messages: list[tuple[str, bytes]] = []
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.disconnected.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.host = node.gw.fqdn()
        self.port = node.gw.ports["mqtt_tls"]

    def _on_connect(
        self, client: object, userdata: object, flags: object, rc: object, props: object = None
    ) -> None:
        self.rc = rc
        self.connected.set()

    def connect(self) -> int:
        """Connect; returns the client's local port (to find the worker serving it)."""
        self.c.connect(self.host, self.port, keepalive=60)
        self.c.loop_start()
        assert self.connected.wait(15), "no CONNACK"
        sock = self.c.socket()
        assert sock is not None
        return int(sock.getsockname()[1])

    def publish(self, payload: str, qos: int = 1) -> bool:
        info = self.c.publish("$resource/data_in", payload, qos=qos)
        info.wait_for_publish(10)
        return info.is_published()

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path, hosts: HostMap) -> Iterator[Node]:
    data = tmp_path_factory.mktemp("node") / "data"
    shutil.copytree(pki_dir, data / "tls")
    with gateway_process(data, dev=False, workers=2, timeout=60) as (proc, gw):
        if not hosts.map(gw.fqdn()):
            pytest.skip(f"{gw.fqdn()} cannot be mapped to 127.0.0.1 (needs root)")
        n = Node(proc, gw, data)
        yield n
        n.api.close()
