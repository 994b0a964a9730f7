"""The connector's limits over HTTP (docs/decisions.md "Limits"), on real sockets from
distinct source addresses: ``429`` with ``Retry-After`` for a device over its publish rate
(requests and bytes) and for an address backed off after failed authentications or
activations; ``413`` for an upload over the device's quota.  Nothing is stored by a
refused request."""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from gateway.services.limits import Limits
from gateway.testing.server import TestGateway

from .conftest import FORM, Client, activate, cik


async def set_limits(gw: TestGateway, **changes: Any) -> None:
    connector = gw.services.registry.require("demo")
    merged = {**msgspec.to_builtins(connector.settings.limits), **changes}
    settings = msgspec.structs.replace(connector.settings, limits=msgspec.convert(merged, Limits))
    await gw.services.connectors.update("demo", settings=settings)


async def client_from(gw: TestGateway, source: str) -> Client:
    stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_http"], local_address=source)
    return Client(stream, gw.devmode_fqdn())


def limited(gw: TestGateway, limit: str) -> int:
    key = (("connector", "demo"), ("limit", limit))
    return gw.services.metrics.limited.get(key, 0)


async def write(c: Client, token: str, body: bytes) -> Any:
    return await c.request("POST", "/onep:v1/stack/alias", headers=[*cik(token), FORM], body=body)


async def test_writes_over_the_rate_get_429_with_retry_after(gw: TestGateway) -> None:
    await set_limits(gw, publishes={"rate": 0.5, "burst": 3})
    c = await client_from(gw, "127.0.0.2")
    token = await activate(c, "dev-1")
    for i in range(3):
        assert (await write(c, token, b"data_in=%d" % i)).status == 204
    r = await write(c, token, b"data_in=over")
    assert r.status == 429, r
    assert r.headers["retry-after"] == "2"  # one write every 2 s: the next in 2 s
    assert "publish_rate" not in r.text
    assert "writes/s" in r.text
    assert (await gw.services.state.get("demo", "dev-1"))["data_in"].reported == "2"
    # another device of the same address has its own budget
    other = await activate(c, "dev-2")
    assert (await write(c, other, b"data_in=x")).status == 204
    assert limited(gw, "publish_rate") == 1


async def test_bytes_over_the_rate_get_429(gw: TestGateway) -> None:
    await set_limits(gw, publish_bytes={"rate": 1000, "burst": 65_536})
    c = await client_from(gw, "127.0.0.2")
    token = await activate(c, "dev-1")
    assert (await write(c, token, b"data_in=" + b"a" * 40_000)).status == 204
    r = await write(c, token, b"data_in=" + b"b" * 40_000)
    assert r.status == 429
    assert int(r.headers["retry-after"]) >= 14
    assert (await gw.services.state.get("demo", "dev-1"))["data_in"].reported == "a" * 40_000
    assert limited(gw, "publish_bytes") == 1


async def test_failed_authentications_back_the_address_off(gw: TestGateway) -> None:
    """Within the budget a wrong token gets 401; once spent, the address gets 429 before
    any lookup, even with a good token; another address is served."""
    await set_limits(
        gw, auth_failures_per_ip={"burst": 2, "rate": 0.01, "backoff_s": 30, "max_backoff_s": 60}
    )
    c = await client_from(gw, "127.0.0.2")
    token = await activate(c, "dev-1")
    for _ in range(3):  # two within the budget, the third starts the back-off
        assert (await write(c, "0" * 40, b"data_in=1")).status == 401
    r = await write(c, token, b"data_in=1")
    assert r.status == 429, r
    assert r.headers["retry-after"] == "30"
    d = await client_from(gw, "127.0.0.3")
    assert (await write(d, token, b"data_in=2")).status == 204
    assert limited(gw, "auth_backoff") == 1


async def test_failed_activations_back_the_address_off(gw: TestGateway) -> None:
    connector = gw.services.registry.require("demo")
    prov = msgspec.structs.replace(connector.settings.provisioning, presenter_identity=False)
    await gw.services.connectors.update(
        "demo", settings=msgspec.structs.replace(connector.settings, provisioning=prov)
    )
    await set_limits(gw, activation_failures_per_ip={"burst": 2, "rate": 0.01, "backoff_s": 10})
    await gw.services.devices.add("demo", "listed")  # whitelisted, not provisioned
    c = await client_from(gw, "127.0.0.2")
    for i in range(3):  # identities nobody whitelisted: 404, the third backs off
        r = await c.request("POST", "/provision/activate", headers=[FORM], body=b"id=x%d" % i)
        assert r.status == 404, r
    r = await c.request("POST", "/provision/activate", headers=[FORM], body=b"id=listed")
    assert r.status == 429
    assert r.headers["retry-after"] == "10"
    d = await client_from(gw, "127.0.0.3")
    r = await d.request("POST", "/provision/activate", headers=[FORM], body=b"id=listed")
    assert r.status == 200
    assert limited(gw, "activation_backoff") == 1


async def test_uploads_over_the_device_quota_get_413(gw: TestGateway) -> None:
    await set_limits(gw, upload_quota=1000)
    c = await client_from(gw, "127.0.0.2")
    token = await activate(c, "dev-1")

    async def upload(name: str, body: bytes) -> Any:
        return await c.request(
            "POST", f"/provision/upload?id={name}", headers=cik(token), body=body
        )

    assert (await upload("a.log", b"a" * 600)).status == 204
    r = await upload("b.log", b"b" * 600)  # 1,200 in all: over, on its Content-Length
    assert r.status == 413, r
    assert "quota" in r.text
    assert (await upload("a.log", b"c" * 900)).status == 204  # a replacement counts instead
    ids = [i.id for i in await gw.services.content.list("demo", "device2/dev-1/")]
    assert ids == ["device2/dev-1/a.log"]
    assert limited(gw, "upload_quota") == 1


async def test_a_streamed_upload_over_the_quota_is_cut(gw: TestGateway) -> None:
    """Without ``Content-Length`` (chunked) the quota is checked as the bytes stream in."""
    await set_limits(gw, upload_quota=1000)
    c = await client_from(gw, "127.0.0.2")
    token = await activate(c, "dev-1")
    chunk = b"x" * 700
    head = (
        f"POST /provision/upload?id=big HTTP/1.1\r\nHost: {gw.devmode_fqdn()}\r\n"
        f"X-Exosite-CIK: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n"
    await c.stream.send_all(head + body)
    answer = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in answer:
            answer += await c.stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert await gw.services.content.list("demo", "device2/dev-1/") == []
