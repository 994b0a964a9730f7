"""The gateway behind a real HAProxy (Debian ``haproxy``) in TCP mode with the PROXY
protocol: the device's address crosses the proxy (docs/decisions.md "Addresses and the
PROXY protocol").

HAProxy listens on 127.0.0.5 and relays, without terminating TLS, to the gateway's TLS
ports with ``send-proxy-v2`` (``send-proxy``, version 1, for the MQTT port), health
checks on.  Devices connect from 127.0.0.7 and 127.0.0.8; the gateway trusts only
127.0.0.1, the address HAProxy connects from.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from gateway.model import LogRecord
from gateway.services.connectors import IpWhitelisting
from gateway.services.logs import LogFilter
from gateway.testing.ports import free_port
from gateway.testing.server import TestGateway, open_test_gateway
from gateway.testing.tlsclient import client_context, mqtt_connect_bytes

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy missing (scripts/bootstrap --system)"
)

FRONT = "127.0.0.5"
DEVICE, STRANGER = "127.0.0.7", "127.0.0.8"


@contextmanager
def haproxy(tmp: Path, backends: dict[str, tuple[int, str]]) -> Iterator[dict[str, int]]:
    """HAProxy relaying a port on FRONT to each ``(gateway port, send-proxy option)``;
    yields the front ports by name and stops it on exit."""
    fronts = {name: free_port(FRONT) for name in backends}
    sections = []
    for name, (port, option) in backends.items():
        sections.append(
            f"listen {name}\n"
            f"  bind {FRONT}:{fronts[name]}\n"
            f"  server gw 127.0.0.1:{port} {option} check inter 200ms\n"
        )
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(
        "global\n  maxconn 200\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
        "  timeout server 30s\n\n" + "\n".join(sections)
    )
    assert HAPROXY is not None
    subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], check=True)
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield fronts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_listening(port: int) -> None:
    with trio.fail_after(10):
        while True:
            try:
                s = await trio.open_tcp_stream(FRONT, port)
            except OSError:
                await trio.sleep(0.05)  # polling a port another process opens
                continue
            await s.aclose()
            return


@pytest.fixture
async def behind(tmp_path: Path) -> AsyncIterator[tuple[TestGateway, dict[str, int]]]:
    async with open_test_gateway(
        tmp_path / "gw",
        proxy_protocol="tls,mqtt_tls",
        proxy_trusted="127.0.0.1",
    ) as gw:
        (tmp_path / "hp").mkdir()
        backends = {
            "tls": (gw.ports["tls"], "send-proxy-v2"),
            "mqtt": (gw.ports["mqtt_tls"], "send-proxy"),
        }
        with haproxy(tmp_path / "hp", backends) as fronts:
            for port in fronts.values():
                await wait_listening(port)
            yield gw, fronts


async def https(
    port: int, gw: TestGateway, src: str, method: str, path: str, body: str = ""
) -> httpx.Response:
    """One request through HAProxy from ``src`` (httpx over a real TLS connection)."""
    transport = httpx.AsyncHTTPTransport(verify=client_context(gw.ca), local_address=src, retries=0)
    async with httpx.AsyncClient(transport=transport) as client:
        return await client.request(
            method,
            f"https://{FRONT}:{port}{path}",
            content=body.encode(),
            headers={
                "Host": gw.fqdn(),
                **({"Content-Type": "application/x-www-form-urlencoded"} if body else {}),
            },
            extensions={"sni_hostname": gw.fqdn()},
        )


async def test_device_address_crosses_haproxy(behind: tuple[TestGateway, dict[str, int]]) -> None:
    gw, fronts = behind
    port = fronts["tls"]
    # /ip: the address and port the device connected to, HAProxy's front
    r = await https(port, gw, DEVICE, "GET", "/ip")
    assert (r.status_code, r.text) == (200, f"127,0,0,5,{port >> 8},{port & 0xFF}")

    # the whitelist judges the device's address, not HAProxy's 127.0.0.1
    c = gw.services.registry.require("demo")
    prov = msgspec.structs.replace(
        c.settings.provisioning, ip_whitelisting=IpWhitelisting(enabled=True, allowed=[DEVICE])
    )
    await gw.services.connectors.update(
        "demo", settings=msgspec.structs.replace(c.settings, provisioning=prov)
    )
    async with gw.services.logs.subscribe(LogFilter("demo", ip=STRANGER, kinds=("debug",))) as sub:
        r = await https(port, gw, STRANGER, "POST", "/provision/activate", "id=stranger")
        assert r.status_code == 403
        with trio.fail_after(5):
            rec: LogRecord = await sub.receive.receive()
        assert rec.reason == "ip_not_allowed"
    r = await https(port, gw, DEVICE, "POST", "/provision/activate", "id=behind-haproxy")
    assert r.status_code == 200, r.text
    async with httpx.AsyncClient(headers=gw.admin_headers) as api:
        got = await api.get(f"{gw.api}/connectors/demo/events", params={"after": 0, "ip": DEVICE})
    assert [(e["type"], e["identity"]) for e in got.json()["items"]] == [
        ("provisioned", "behind-haproxy")
    ]
    # HAProxy's health checks (LOCAL headers, then close) leave no refusal behind
    assert not [k for k in gw.services.metrics.refused if "proxy" in str(k)]
    await trio.sleep(0.5)  # a few more health-check rounds (inter 200ms) to count
    refused = gw.services.metrics.refused
    closed = sum(n for k, n in refused.items() if ("reason", "ssl_closed") in k)
    assert closed <= len(fronts)  # wait_listening's probes only


async def test_mqtt_through_haproxy_proxy_v1(behind: tuple[TestGateway, dict[str, int]]) -> None:
    gw, fronts = behind
    async with gw.services.logs.subscribe(LogFilter("demo", ip=DEVICE, kinds=("debug",))) as sub:
        tcp = await trio.open_tcp_stream(FRONT, fronts["mqtt"], local_address=DEVICE)
        ctx = client_context(gw.ca, alpn=["mqtt"])
        stream = trio.SSLStream(tcp, ctx, server_hostname=gw.fqdn())
        async with stream:
            await stream.send_all(mqtt_connect_bytes("anonymous"))  # provisioning only
            with trio.fail_after(5):
                connack = await stream.receive_some(4)
                rec: LogRecord = await sub.receive.receive()
    assert connack == b"\x20\x02\x00\x00"
    assert (rec.event, rec.ip) == ("connect", DEVICE)  # the device's, not HAProxy's
