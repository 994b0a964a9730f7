"""Device addresses over real sockets: IPv6 listeners on ``::1`` and the PROXY protocol.

What a device's address decides, checked end to end through the whole gateway: ``GET /ip``
(docs/protocol.md §2.9: the address the device connected to, eighteen bytes for IPv6), the
IP whitelist (``ip_not_allowed``), the event log's ``ip`` and its ``?ip=`` filter, and the
live debug log by IP.  PROXY headers are written here byte by byte from HAProxy's
doc/proxy-protocol.txt and sent from 127.0.0.1 (trusted) or 127.0.0.2 (not trusted).
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from gateway.model import LogRecord
from gateway.services.connectors import IpWhitelisting
from gateway.services.logs import LogFilter
from gateway.testing.server import TestGateway
from gateway.testing.tlsclient import client_context, mqtt_connect_bytes

from .conftest import _OPEN, FORM, Client, activate, running_gateway

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    block = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return SIG + b"\x21\x21" + struct.pack("!H", len(block)) + block


def v2_tcp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    block = (
        bytes(map(int, src.split(".")))
        + bytes(map(int, dst.split(".")))
        + struct.pack("!HH", sport, dport)
    )
    return SIG + b"\x21\x11" + struct.pack("!H", len(block)) + block


V2_LOCAL = SIG + b"\x20\x00\x00\x00"


async def tls_client(
    gw: TestGateway,
    *,
    host: str = "127.0.0.1",
    local: str | None = None,
    header: bytes = b"",
    port: str = "tls",
) -> Client:
    """A TLS HTTP/1.1 client to the demo connector from ``local``, with ``header`` first."""
    tcp = await trio.open_tcp_stream(host, gw.ports[port], local_address=local)
    _OPEN.append(tcp)
    if header:
        await tcp.send_all(header)
    stream = trio.SSLStream(
        tcp, client_context(gw.ca, alpn=["http/1.1"]), server_hostname=gw.fqdn()
    )
    await stream.do_handshake()
    return Client(stream, gw.fqdn())


def ip_bytes(ip: str, port: int) -> str:
    packed = ipaddress.ip_address(ip).packed
    return ",".join(str(b) for b in (*packed, port >> 8, port & 0xFF))


async def whitelist(gw: TestGateway, *allowed: str) -> None:
    c = gw.services.registry.require("demo")
    prov = msgspec.structs.replace(
        c.settings.provisioning, ip_whitelisting=IpWhitelisting(enabled=True, allowed=list(allowed))
    )
    await gw.services.connectors.update(
        "demo", settings=msgspec.structs.replace(c.settings, provisioning=prov)
    )


async def events_by_ip(gw: TestGateway, ip: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(headers=gw.admin_headers) as api:
        r = await api.get(f"{gw.api}/connectors/demo/events", params={"after": 0, "ip": ip})
    assert r.status_code == 200, r.text
    items: list[dict[str, object]] = r.json()["items"]
    return items


# -- IPv6 ------------------------------------------------------------------------------------


@pytest.fixture
async def gw6(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(tmp_path, host="127.0.0.1,::1") as gateway:
        try:
            yield gateway
        finally:
            while _OPEN:
                await trio.aclose_forcefully(_OPEN.pop())


async def test_ipv6_ip_whitelist_events_and_debug_log(gw6: TestGateway) -> None:
    port = gw6.ports["tls"]
    c6 = await tls_client(gw6, host="::1")
    r = await c6.request("GET", "/ip")
    assert (r.status, r.text) == (200, ip_bytes("::1", port))
    assert r.text.count(",") == 17
    c4 = await tls_client(gw6, host="127.0.0.1")
    assert (await c4.request("GET", "/ip")).text == f"127,0,0,1,{port >> 8},{port & 0xFF}"

    await whitelist(gw6, "::1/128")
    await activate(c6, "v6-dev")
    r = await c4.request("POST", "/provision/activate", body=b"id=v4-dev", headers=[FORM])
    assert r.status == 403, r

    items = await events_by_ip(gw6, "0:0:0:0:0:0:0:1")  # any spelling of ::1 matches
    assert [(e["type"], e["identity"], e["ip"]) for e in items] == [
        ("provisioned", "v6-dev", "::1")
    ]
    async with httpx.AsyncClient(headers=gw6.admin_headers) as api:
        r2 = await api.get(f"{gw6.api}/connectors/demo/events", params={"ip": "::1::"})
    assert r2.status_code == 400
    assert "IPv4 or IPv6" in r2.text

    # the live debug log filtered on ::1 shows the refusal of a device on ::1, not IPv4's
    async with gw6.services.logs.subscribe(LogFilter("demo", ip="::1", kinds=("debug",))) as sub:
        r = await c6.request("POST", "/provision/activate", body=b"id=v6-dev", headers=[FORM])
        assert r.status == 409  # already provisioned
        await c4.request("POST", "/provision/activate", body=b"id=x", headers=[FORM])
        with trio.fail_after(5):
            rec: LogRecord = await sub.receive.receive()
    assert (rec.ip, rec.reason) == ("::1", "already_provisioned")


async def test_ipv6_mqtt_connect_is_logged_by_its_address(gw6: TestGateway) -> None:
    """MQTT over TLS on ::1: the live debug log filtered on ::1 shows the session's
    ``connect`` (an anonymous one, for provisioning) with that address."""
    async with gw6.services.logs.subscribe(LogFilter("demo", ip="::1", kinds=("debug",))) as sub:
        tcp = await trio.open_tcp_stream("::1", gw6.ports["mqtt_tls"])
        ctx = client_context(gw6.ca, alpn=["mqtt"])
        stream = trio.SSLStream(tcp, ctx, server_hostname=gw6.fqdn())
        async with stream:
            await stream.send_all(mqtt_connect_bytes("nobody"))
            with trio.fail_after(5):
                connack = await stream.receive_some(4)
                rec: LogRecord = await sub.receive.receive()
    assert connack[0] == 0x20
    assert connack == b"\x20\x02\x00\x00"  # accepted: anonymous, for provisioning only
    assert (rec.ip, rec.event) == ("::1", "connect")


async def test_ipv6_plain_dev_port(gw6: TestGateway) -> None:
    stream = await trio.open_tcp_stream("::1", gw6.ports["dev_http"])
    c = Client(stream, gw6.devmode_fqdn())
    port = gw6.ports["dev_http"]
    assert (await c.request("GET", "/ip")).text == ip_bytes("::1", port)


async def test_ipv4_mapped_listener_records_ipv4(tmp_path: Path) -> None:
    """A dual-stack socket (``::ffff:127.0.0.1`` binds with IPV6_V6ONLY off, like ``::``)
    reports IPv4 clients as IPv4-mapped IPv6: they are recorded as IPv4."""
    async with running_gateway(tmp_path, host="::ffff:127.0.0.1") as gw:
        try:
            c = await tls_client(gw, host="127.0.0.1")
            port = gw.ports["tls"]
            assert (await c.request("GET", "/ip")).text == f"127,0,0,1,{port >> 8},{port & 0xFF}"
            await whitelist(gw, "127.0.0.0/8")
            await activate(c, "mapped")
            [event] = await events_by_ip(gw, "127.0.0.1")
            assert event["identity"] == "mapped"
        finally:
            while _OPEN:
                await trio.aclose_forcefully(_OPEN.pop())


# -- PROXY protocol -------------------------------------------------------------------------


@pytest.fixture
async def gwp(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(
        tmp_path,
        proxy_protocol="tls,dev_http",
        proxy_trusted="127.0.0.1,::1",
        handshake_timeout_s=2.0,
    ) as gateway:
        try:
            yield gateway
        finally:
            while _OPEN:
                await trio.aclose_forcefully(_OPEN.pop())


async def test_proxy_v2_addresses_reach_ip_whitelist_and_events(gwp: TestGateway) -> None:
    header = v2_tcp6("2001:db8::7", "2001:db8::443", 50000, 443)
    c = await tls_client(gwp, header=header)
    assert (await c.request("GET", "/ip")).text == ip_bytes("2001:db8::443", 443)
    await whitelist(gwp, "2001:db8::/64")
    await activate(c, "behind-proxy")
    [event] = await events_by_ip(gwp, "2001:db8::7")
    assert event["identity"] == "behind-proxy"

    # the proxy's own address is not whitelisted: a header naming another source is refused
    other = await tls_client(gwp, header=v2_tcp4("198.51.100.9", "192.0.2.1", 1, 8443))
    r = await other.request("POST", "/provision/activate", body=b"id=x", headers=[FORM])
    assert r.status == 403
    assert (await other.request("GET", "/ip")).text == "192,0,2,1,32,251"


async def test_proxy_v1_local_and_dev_port(gwp: TestGateway) -> None:
    line = b"PROXY TCP4 203.0.113.5 192.0.2.80 61000 80\r\n"
    tcp = await trio.open_tcp_stream("127.0.0.1", gwp.ports["dev_http"])
    await tcp.send_all(line)
    c = Client(tcp, gwp.devmode_fqdn())
    assert (await c.request("GET", "/ip")).text == "192,0,2,80,0,80"
    # LOCAL (a health check through the proxy): the socket's own addresses
    port = gwp.ports["tls"]
    local = await tls_client(gwp, header=V2_LOCAL)
    assert (await local.request("GET", "/ip")).text == f"127,0,0,1,{port >> 8},{port & 0xFF}"


async def refusal(gw: TestGateway, ip: str, send: bytes, *, src: str = "127.0.0.1") -> LogRecord:
    """Connect from ``src``, send ``send``; the connection must close without TLS and one
    debug record keyed by ``ip`` must say why."""
    async with gw.services.logs.subscribe(LogFilter("demo", ip=ip, kinds=("debug",))) as sub:
        tcp = await trio.open_tcp_stream("127.0.0.1", gw.ports["tls"], local_address=src)
        _OPEN.append(tcp)
        if send:
            await tcp.send_all(send)
        with trio.fail_after(5):
            # closed with nothing sent (or reset: the gateway closed with our bytes unread)
            with contextlib.suppress(trio.BrokenResourceError):
                assert await tcp.receive_some(100) == b""
            return await sub.receive.receive()


async def test_proxy_refusals_have_clear_reasons(gwp: TestGateway) -> None:
    hello = b"\x16\x03\x01\x00\x05hello"
    # a header from a source that is no trusted proxy
    rec = await refusal(gwp, "127.0.0.2", v2_tcp4("10.9.9.9", "10.0.0.1", 1, 2), src="127.0.0.2")
    assert rec.reason == "proxy_untrusted"
    assert "127.0.0.2" in (rec.detail or "")
    # no header from the trusted proxy (required by default)
    rec = await refusal(gwp, "127.0.0.1", hello)
    assert rec.reason == "proxy_missing"
    # malformed and oversized headers
    rec = await refusal(gwp, "127.0.0.1", b"PROXY TCP4 10.0.0.01 10.0.0.2 1 2\r\n")
    assert rec.reason == "bad_proxy_header"
    rec = await refusal(gwp, "127.0.0.1", SIG + b"\x21\x11\xff\xff")
    assert rec.reason == "bad_proxy_header"
    assert "limit" in (rec.detail or "")
    # half a header, then silence: the deadline
    rec = await refusal(gwp, "127.0.0.1", b"PROXY TCP4 10.0.")
    assert rec.reason == "idle_timeout"
    assert "PROXY header" in (rec.detail or "")
    counts = gwp.services.metrics.refused
    assert sum(v for k, v in counts.items() if "proxy" in str(k)) >= 5


async def test_proxy_untrusted_sources_without_header_are_served(gwp: TestGateway) -> None:
    c = await tls_client(gwp, local="127.0.0.3")
    port = gwp.ports["tls"]
    assert (await c.request("GET", "/ip")).text == f"127,0,0,1,{port >> 8},{port & 0xFF}"
    await whitelist(gwp, "127.0.0.3")
    await activate(c, "direct")
    [event] = await events_by_ip(gwp, "127.0.0.3")
    assert event["identity"] == "direct"


async def test_proxy_optional_and_health_check(tmp_path: Path) -> None:
    async with running_gateway(
        tmp_path, proxy_protocol="tls", proxy_trusted="127.0.0.0/8", proxy_required=False
    ) as gw:
        try:
            c = await tls_client(gw)  # trusted, no header, not required: the socket's
            port = gw.ports["tls"]
            assert (await c.request("GET", "/ip")).text == f"127,0,0,1,{port >> 8},{port & 0xFF}"
            # a TCP health check (connect, close) leaves no debug record and no refusal
            before = sum(gw.services.metrics.refused.values())
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            await tcp.aclose()
            c2 = await tls_client(gw)  # served after it
            assert (await c2.request("GET", "/timestamp")).status == 200
            assert sum(gw.services.metrics.refused.values()) == before
        finally:
            while _OPEN:
                await trio.aclose_forcefully(_OPEN.pop())
