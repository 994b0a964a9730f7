"""Device-side and management-side helpers the scenarios use against the gateway.

Provisioning follows the bench contract: anonymous MQTT CONNECT (client id "", username ""),
PUBLISH QoS 1 ``$provision/<identity>`` with an empty payload, PUBACK, then the server
publishes the 40-hex token on ``$provision/<identity>``.  Management calls use the admin
bearer token.  Every function raises ``PeerUnavailable`` with the reason when the gateway
part it needs is not there (so the scenario skips instead of reporting a fake number).
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import mqtt_wire as wire
from bench.loadgen import Credentials, require_loopback
from bench.peers import GATEWAY_UNAVAILABLE, PeerUnavailable, Server

MQTT_UNAVAILABLE = "gateway MQTT not available yet"


def _read_frames(sock: socket.socket, buf: bytearray, want: int) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    while len(frames) < want:
        data = sock.recv(65536)
        if not data:
            raise PeerUnavailable(f"{MQTT_UNAVAILABLE}: connection closed during provisioning")
        buf += data
        frames += wire.split_frames(buf)
    return frames


def provision_mqtt(port: int, identity: str, host: str = "127.0.0.1") -> str:
    """Provision one device over plain MQTT; return its token."""
    require_loopback(host)
    try:
        with socket.create_connection((host, port), timeout=20) as sock:
            buf = bytearray()
            sock.sendall(wire.connect("", username=""))
            (first, body), *_ = _read_frames(sock, buf, 1)
            if first != wire.CONNACK or body[1:2] != b"\x00":
                raise PeerUnavailable(f"{MQTT_UNAVAILABLE}: anonymous CONNECT refused")
            sock.sendall(wire.publish(f"$provision/{identity}", b"", qos=1, packet_id=1))
            frames = _read_frames(sock, buf, 2)
            for first, body in frames:
                if first & wire.TYPE_MASK == wire.PUBLISH:
                    tlen = int.from_bytes(body[:2], "big")
                    skip = 2 + tlen + (2 if first & wire.QOS1_FLAG else 0)
                    return body[skip:].decode()
            raise PeerUnavailable(f"{MQTT_UNAVAILABLE}: no token published")
    except OSError as exc:
        raise PeerUnavailable(f"{MQTT_UNAVAILABLE}: {exc}") from exc


def provision_many(gw: Server, count: int, prefix: str = "bench") -> list[Credentials]:
    """Provision `count` devices over the dev MQTT port (32 at a time); token credentials."""
    port = gw.ports.get("dev_mqtt")
    if not port:
        raise PeerUnavailable(f"{MQTT_UNAVAILABLE}: run.json has no dev_mqtt port")
    ids = [f"{prefix}{i:07d}" for i in range(count)]
    with ThreadPoolExecutor(32) as pool:
        tokens = list(pool.map(lambda ident: provision_mqtt(port, ident), ids))
    return [Credentials("", "", t) for t in tokens]


def api(
    gw: Server,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    """One management API call; JSON in and out.  HTTP 404/405/501 → PeerUnavailable."""
    port = gw.ports.get("api")
    if not port:
        raise PeerUnavailable(f"{GATEWAY_UNAVAILABLE}: no management API port")
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1{path}",
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {gw.extra.get('admin_token', '')}",
            "Content-Type": content_type,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405, 501):
            raise PeerUnavailable(f"{GATEWAY_UNAVAILABLE}: {method} {path} -> {exc.code}") from exc
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise RuntimeError(f"{method} {path} -> {exc.code}: {detail}") from exc
    except OSError as exc:
        raise PeerUnavailable(f"{GATEWAY_UNAVAILABLE}: {method} {path}: {exc}") from exc
    return json.loads(payload) if payload else None
