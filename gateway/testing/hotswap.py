"""Certificate hot swap under live devices, against a running gateway (in-process or not).

One scenario, shared by the suite (``tests/conformance/tls/test_06_hot_swap.py``, a few
hundred devices) and ``bench/tls_hot_swap.py`` (1,000): a connector with its own server
certificate A, ``devices`` MQTT devices connected over TLS with pre-shared tokens, then A
replaced by B through ``PATCH /api/v1/connectors/{cid}/settings`` while they stay
connected.  Afterwards a new handshake must get B, and every old connection must still
answer a PINGREQ (it keeps the TLS session it made with A).  Everything goes through the
public interfaces (management API, device TLS port), so the figures are what an operator
and a fleet would see.
"""

from __future__ import annotations

import secrets
import ssl
import time

import httpx
import msgspec
import trio

from gateway.testing.mqtt_bytes import gen_connack, gen_connect, gen_pingreq, gen_pingresp
from gateway.testing.tlsclient import client_context, open_tls_client
from gateway.tls.pki import fingerprint, issue_server_cert

__all__ = ["HotSwapResult", "run_hot_swap"]

Stream = trio.SSLStream[trio.SocketStream]
READ_TIMEOUT_S = 30.0  # per answer; generous for a loaded 2-core machine


class HotSwapResult(msgspec.Struct, frozen=True):
    """What happened; ``dropped`` is what the acceptance criterion reads (0)."""

    devices: int
    connect_s: float  # every handshake + CONNACK, concurrently
    swap_s: float  # the PATCH round trip (committed and in the registry on return)
    old_fingerprint: str
    new_fingerprint: str
    served_after: str  # fingerprint a new handshake got after the swap
    new_device_connected: bool  # a device connecting after the swap got CONNACK 0
    alive: int  # old connections answering PINGREQ after the swap
    dropped: int  # devices - alive
    ping_s: float  # the PINGREQ round over every old connection
    connections_gauge: int  # gateway_connections for the connector after the swap


async def _read_exactly(stream: Stream, n: int) -> bytes:
    data = b""
    with trio.move_on_after(READ_TIMEOUT_S):
        while len(data) < n:
            try:
                chunk = await stream.receive_some(n - len(data))
            except trio.BrokenResourceError:
                return data
            if not chunk:
                return data
            data += chunk
    return data


async def _connect(port: int, name: str, ctx: ssl.SSLContext, identity: str, token: str) -> Stream:
    stream = await open_tls_client(port, name, ctx)
    await stream.send_all(gen_connect(identity, username="", password=token, keepalive=0))
    if await _read_exactly(stream, 4) != gen_connack(0):
        await trio.aclose_forcefully(stream)
        raise AssertionError(f"device {identity} was not accepted")
    return stream


def _peer_fingerprint(stream: Stream) -> str:
    der = stream.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)


def _gauge(metrics_text: str, connector: str) -> int:
    total = 0
    for line in metrics_text.splitlines():
        if line.startswith("gateway_connections{") and f'connector="{connector}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def run_hot_swap(
    *,
    api: str,
    admin_headers: dict[str, str],
    tls_port: int,
    ca_path: str,
    ca_key_pem: str,
    devices: int,
    connector: str = "hotswap",
    parallel: int = 64,
) -> HotSwapResult:
    """Run the scenario (module docstring) and report it; the connector is deleted again.

    ``api`` is the management API base (``http://127.0.0.1:9080/api/v1``); the server
    certificates are issued by the CA at ``ca_path`` with ``ca_key_pem`` (the data
    directory's development CA).  ``parallel`` bounds concurrent handshakes and API calls.
    Raises ``AssertionError`` when a device cannot connect before the swap.
    """
    name = f"{connector}.m2.localhost"
    ca_pem = await trio.Path(ca_path).read_text()
    cert_a, key_a = issue_server_cert(ca_pem, ca_key_pem, [name])
    cert_b, key_b = issue_server_cert(ca_pem, ca_key_pem, [name])
    tokens = {f"dev-{i:05d}": secrets.token_hex(20) for i in range(devices + 1)}
    late = f"dev-{devices:05d}"  # connects only after the swap
    limiter = trio.CapacityLimiter(parallel)
    ctx = client_context(ca_path, alpn=["mqtt"])
    streams: list[Stream] = []
    async with httpx.AsyncClient(base_url=api, headers=admin_headers, timeout=60) as http:
        answer = await http.post(
            "/connectors",
            json={
                "name": "Hot swap",
                "id": connector,
                "settings": {"pki": {"server_cert": cert_a, "server_key": key_a}},
            },
        )
        answer.raise_for_status()
        try:

            async def add(identity: str, token: str) -> None:
                async with limiter:
                    body = {"identity": identity, "auth": {"type": "token", "key": token}}
                    added = await http.post(f"/connectors/{connector}/devices", json=body)
                    added.raise_for_status()

            async with trio.open_nursery() as nursery:
                for identity, token in tokens.items():
                    nursery.start_soon(add, identity, token)

            async def connect(identity: str, token: str) -> None:
                async with limiter:
                    streams.append(await _connect(tls_port, name, ctx, identity, token))

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for identity, token in list(tokens.items())[:devices]:
                    nursery.start_soon(connect, identity, token)
            connect_s = time.perf_counter() - started
            assert {_peer_fingerprint(s) for s in streams} == {fingerprint(cert_a)}

            started = time.perf_counter()
            swapped = await http.patch(
                f"/connectors/{connector}/settings",
                json={"pki": {"server_cert": cert_b, "server_key": key_b}},
            )
            swap_s = time.perf_counter() - started
            swapped.raise_for_status()

            try:
                fresh = await _connect(tls_port, name, ctx, late, tokens[late])
            except (AssertionError, trio.BrokenResourceError):
                served_after, new_ok = "", False
            else:
                served_after, new_ok = _peer_fingerprint(fresh), True
                streams.append(fresh)

            alive = 0

            async def ping(stream: Stream) -> None:
                nonlocal alive
                async with limiter:
                    try:
                        await stream.send_all(gen_pingreq())
                    except trio.BrokenResourceError:
                        return
                    if await _read_exactly(stream, 2) == gen_pingresp():
                        alive += 1

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for stream in streams[:devices]:
                    nursery.start_soon(ping, stream)
            ping_s = time.perf_counter() - started
            metrics = await http.get(api.removesuffix("/api/v1") + "/metrics")
            gauge = _gauge(metrics.text, connector)
        finally:
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(trio.aclose_forcefully, stream)
            await http.delete(f"/connectors/{connector}")
    return HotSwapResult(
        devices=devices,
        connect_s=round(connect_s, 3),
        swap_s=round(swap_s, 4),
        old_fingerprint=fingerprint(cert_a),
        new_fingerprint=fingerprint(cert_b),
        served_after=served_after,
        new_device_connected=new_ok,
        alive=alive,
        dropped=devices - alive,
        ping_s=round(ping_s, 3),
        connections_gauge=gauge,
    )
