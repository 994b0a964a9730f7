"""A 3-node cluster (PostgreSQL, NATS JetStream, HAProxy; ``gateway/testing/cluster.py``)
started once per module, and real clients that reach it through HAProxy."""

from __future__ import annotations

import secrets
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest

from gateway.testing import cluster
from gateway.testing.hosts import HostMap

HOST = "demo.m2.localhost"


class Cluster:
    """The running cluster: cluster.json, an admin client per node, HAProxy's runtime API."""

    def __init__(self, root: Path, info: cluster.ClusterInfo) -> None:
        self.root = root
        self.info = info
        token = Path(info.admin_token).read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.apis = {
            n.name: httpx.Client(base_url=f"{n.api}/api/v1", headers=self.headers, timeout=30)
            for n in info.nodes
        }

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.info.nodes]

    def api(self, name: str = "node-1") -> httpx.Client:
        return self.apis[name]

    def device(self, identity: str, via: str = "node-1") -> str:
        """A provisioned device of the demo connector; returns its token."""
        token = secrets.token_hex(20)
        r = self.api(via).post(
            "/connectors/demo/devices",
            json={"identity": identity, "auth": {"type": "token", "key": token}},
        )
        assert r.status_code == 201, r.text
        return token

    def events(self, identity: str, via: str = "node-1") -> list[dict[str, object]]:
        """The device's events, read by cursor through node ``via``."""
        out: list[dict[str, object]] = []
        after = 0
        while True:
            r = self.api(via).get("/connectors/demo/events", params={"after": after, "limit": 1000})
            r.raise_for_status()
            page = r.json()
            if not page["items"]:
                return out
            out += [e for e in page["items"] if e["identity"] == identity]
            after = int(page["next"])

    def holder(self, identity: str) -> str | None:
        """The node holding the device's last connection (connection ids start with the
        node's name)."""
        connects = [e for e in self.events(identity) if e["type"] == "connect"]
        if not connects:
            return None
        last = max(connects, key=lambda e: int(e["seq"]))  # type: ignore[arg-type]
        return str(last["connection_id"]).split(".", 1)[0]

    @contextmanager
    def only(self, name: str, backend: str) -> Iterator[None]:
        """New connections of ``backend`` (``tls``, ``mqtt_tls``) go to node ``name`` only
        (the others drained through HAProxy's runtime API: theirs stay)."""
        others = [n for n in self.names if n != name]
        try:
            for n in others:
                cluster.haproxy_command(self.root, f"set server nodes_{backend}/{n} state drain")
            yield
        finally:
            for n in others:
                cluster.haproxy_command(self.root, f"set server nodes_{backend}/{n} state ready")

    def sessions(self, backend: str, name: str) -> int:
        """HAProxy's current session count of node ``name`` in ``backend``."""
        text = cluster.haproxy_command(self.root, "show stat")
        header = text.splitlines()[0].lstrip("# ").split(",")
        for line in text.splitlines()[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == f"nodes_{backend}" and row.get("svname") == name:
                return int(row["scur"] or 0)
        raise KeyError(name)

    def https(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.info.ca)
        return httpx.Client(
            base_url=f"https://{HOST}:{self.info.haproxy.tls_port}", verify=ctx, timeout=30
        )

    def close(self) -> None:
        for c in self.apis.values():
            c.close()


class Mqtt:
    """paho over TLS through HAProxy's MQTT/TLS port; events as threading.Events."""

    def __init__(self, c: Cluster, token: str, *, port: int | None = None) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.username_pw_set("", token)
        self.c.tls_set_context(ssl.create_default_context(cafile=c.info.ca))
        self.c.reconnect_delay_set(60, 60)  # a kicked client must not come back by itself
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.rc: object = None
        self.messages: list[tuple[str, bytes]] = []
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.disconnected.set()
        self.c.on_message = lambda cl, u, m: self.messages.append((m.topic, m.payload))
        self.port = port or c.info.haproxy.mqtt_tls_port

    def _on_connect(self, *args: object) -> None:
        self.rc = args[3]
        self.connected.set()

    def connect(self) -> None:
        self.c.connect(HOST, self.port, keepalive=60)
        self.c.loop_start()
        assert self.connected.wait(15), "no CONNACK"
        assert not getattr(self.rc, "is_failure", False), self.rc

    def publish(self, payload: str, qos: int = 1, topic: str = "$resource/data_in") -> bool:
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        return info.is_published()

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def gw_cluster(tmp_path_factory: pytest.TempPathFactory, hosts: HostMap) -> Iterator[Cluster]:
    if not hosts.map(HOST):
        pytest.skip(f"{HOST} cannot be mapped to 127.0.0.1 (needs root)")
    root = tmp_path_factory.mktemp("cluster")
    info = cluster.up(
        root,
        3,
        tls_port=cluster.free_port(),
        mqtt_tls_port=cluster.free_port(),
        api_port_base=0,
        workers=2,
    )
    c = Cluster(root, info)
    try:
        yield c
    finally:
        c.close()
        cluster.down(root)
