"""Device content (docs/protocol.md §2.8, §12 item 18), utilities (§2.9) and bad input:
limits, malformed requests and unknown routes get the right status and change nothing."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator

from gateway.testing.server import TestGateway

from .conftest import FORM, Client, activate, cik, raw_exchange

ALIAS = "/onep:v1/stack/alias"
DOWNLOAD = "/provision/download"


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _put(gw: TestGateway, cid: str, data: bytes, **kw: str) -> None:
    await gw.services.content.put("demo", cid, _chunks(data), **kw)


async def test_list_info_download(gw: TestGateway) -> None:
    await _put(
        gw,
        "splash.png",
        b"\x89PNG" + bytes(100),
        content_type="image/png",
        description="Boot splash screen",
    )
    await _put(gw, "fw.bin", b"firmware")
    c = await Client.dev(gw)
    token = await activate(c, "c-1")
    r = await c.request("GET", DOWNLOAD, headers=cik(token))
    assert r.status == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert sorted(r.text.splitlines()) == ["fw.bin", "splash.png"]
    r = await c.request(
        "GET", f"{DOWNLOAD}?id=splash.png&info=true&vendor=x&model=y", headers=cik(token)
    )
    kind, size, updated, desc = r.text.split(",", 3)
    assert (r.status, kind, size, desc) == (200, "image/png", "104", "Boot splash screen")
    assert abs(int(updated) - time.time()) < 60
    r = await c.request("GET", f"{DOWNLOAD}?id=fw.bin", headers=cik(token))
    assert r.status == 200
    assert r.body == b"firmware"
    assert r.headers["accept-ranges"] == "bytes"
    r = await c.request("GET", f"{DOWNLOAD}?id=missing", headers=cik(token))
    assert r.status == 404
    assert (await c.request("GET", DOWNLOAD)).status == 401


async def test_ranges_and_large_streamed_download(gw: TestGateway) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await _put(gw, "big.bin", data)
    c = await Client.dev(gw)
    token = await activate(c, "c-2")
    r = await c.request("GET", f"{DOWNLOAD}?id=big.bin", headers=cik(token))
    assert r.status == 200
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()
    total = len(data)
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=100-": (100, total - 1),
        "bytes=-5": (total - 5, total - 1),
        "bytes=10-99999999": (10, total - 1),
    }
    for rng, (first, last) in cases.items():
        r = await c.request("GET", f"{DOWNLOAD}?id=big.bin", headers=[*cik(token), ("Range", rng)])
        assert r.status == 206, rng
        assert r.headers["content-range"] == f"bytes {first}-{last}/{total}"
        assert r.body == data[first : last + 1]
    r = await c.request(
        "GET", f"{DOWNLOAD}?id=big.bin", headers=[*cik(token), ("Range", f"bytes={total}-")]
    )
    assert r.status == 416
    assert r.headers["content-range"] == f"bytes */{total}"


async def test_device_upload_is_private(gw: TestGateway) -> None:
    c = await Client.dev(gw)
    token = await activate(c, "u-1")
    other = await activate(c, "u-2")
    r = await c.request(
        "POST",
        "/provision/upload?id=log.txt",
        headers=[*cik(token), ("Content-Type", "text/plain")],
        body=b"hello",
    )
    assert r.status == 204
    info = await gw.services.content.info("demo", "device2/u-1/log.txt")
    assert (info.type, info.length) == ("text/plain", 5)
    assert [e.type for e in await gw.services.events.read("demo")].count("content_in") == 1
    mine = await c.request("GET", DOWNLOAD, headers=cik(token))
    assert "device2/u-1/log.txt" in mine.text.splitlines()
    theirs = await c.request("GET", DOWNLOAD, headers=cik(other))
    assert "device2/u-1/log.txt" not in theirs.text
    r = await c.request("GET", f"{DOWNLOAD}?id=device2/u-1/log.txt", headers=cik(other))
    assert r.status == 404
    r = await c.request("POST", "/provision/upload?id=../../x", headers=cik(token), body=b"x")
    assert r.status == 400


async def test_timestamp_and_ip(gw: TestGateway) -> None:
    c = await Client.dev(gw)
    r = await c.request("GET", "/timestamp")
    assert r.status == 200
    assert abs(int(r.text) - time.time()) < 5
    r = await c.request("GET", "/ip")
    port = gw.ports["dev_http"]
    assert r.status == 200
    assert r.text == f"127,0,0,1,{port >> 8},{port & 0xFF}"


async def test_oversized_value_and_body_are_413(gw: TestGateway) -> None:
    """limit = connector ``settings.limits.max_payload`` per value (default 1 MiB)."""
    c = await Client.dev(gw)
    token = await activate(c, "big-1")
    limit = gw.services.registry.require("demo").settings.limits.max_payload
    r = await c.request(
        "POST", ALIAS, headers=[*cik(token), FORM], body=b"data_in=" + b"x" * (limit + 1)
    )
    assert r.status == 413
    ok = await Client.dev(gw)
    r = await ok.request(
        "POST", ALIAS, headers=[*cik(token), FORM], body=b"data_in=" + b"x" * limit
    )
    assert r.status == 204
    out = await raw_exchange(
        gw.ports["dev_http"],
        (
            f"POST {ALIAS} HTTP/1.1\r\nHost: {gw.devmode_fqdn()}\r\nX-Exosite-CIK: {token}\r\n"
            f"Content-Length: {50 * limit}\r\n\r\n"
        ).encode()
        + b"data_in="
        + b"y" * 1000,
    )
    assert out.startswith(b"HTTP/1.1 413")
    assert (await gw.services.state.get("demo", "big-1"))["data_in"].reported == "x" * limit


async def test_malformed_requests(gw: TestGateway) -> None:
    c = await Client.dev(gw)
    token = await activate(c, "m-1")
    # percent-escapes that decode to invalid UTF-8
    r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"data_in=%ff%fe")
    assert r.status == 400
    r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"")
    assert r.status == 400
    r = await c.request("GET", ALIAS, headers=cik(token))
    assert r.status == 400
    r = await c.request(
        "GET", f"{ALIAS}?data_out", headers=[*cik(token), ("Request-Timeout", "soon")]
    )
    assert r.status == 400
    assert (await c.request("DELETE", ALIAS, headers=cik(token))).status == 405
    assert (await c.request("GET", "/nothing/here", headers=cik(token))).status == 404
    assert await gw.services.state.get("demo", "m-1") == {}
    # huge header blocks: 431, whether they arrive in one read or several
    for size in (20_000, 200_000):
        out = await raw_exchange(
            gw.ports["dev_http"],
            (
                f"GET /timestamp HTTP/1.1\r\nHost: {gw.devmode_fqdn()}\r\nX-Big: {'a' * size}\r\n"
                "Connection: close\r\n\r\n"
            ).encode(),
        )
        assert out.startswith(b"HTTP/1.1 431"), (size, out[:100])
    # not HTTP at all
    out = await raw_exchange(gw.ports["dev_http"], b"\x00\x01garbage\r\n\r\n", timeout=1)
    assert out.startswith(b"HTTP/1.1 400") or out == b""
    # the gateway still serves
    assert (await c.request("GET", "/timestamp")).status == 200
