"""The HTTP device API driven by the real ``curl`` over TLS, HTTP/1.1 and HTTP/2 (ALPN h2
from the front door, h2 framing by hypercorn): the commands of docs/http-device-api.md."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator

import pytest
import trio

from gateway.testing.server import TestGateway

pytestmark = [
    pytest.mark.needs_tool,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing"),
]


class Curl:
    def __init__(self, gw: TestGateway, version: str) -> None:
        self.host = gw.fqdn()
        self.port = gw.ports["tls"]
        self.base = f"https://{self.host}:{self.port}"
        self.common = [
            "curl",
            "-sS",
            "--max-time",
            "20",
            version,
            "--resolve",
            f"{self.host}:{self.port}:127.0.0.1",
            "--cacert",
            gw.ca,
            "-w",
            "\n%{http_code} %{http_version}",
        ]

    async def __call__(self, path: str, *args: str) -> tuple[int, str, str]:
        """(status, HTTP version, body)."""
        result = await trio.run_process(
            [*self.common, *args, self.base + path],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        body, _, tail = result.stdout.decode().rpartition("\n")
        status, version = tail.split()
        return int(status), version, body


@pytest.mark.parametrize(("flag", "wire"), [("--http1.1", "1.1"), ("--http2", "2")])
async def test_curl_device_session(gw: TestGateway, flag: str, wire: str) -> None:
    curl = Curl(gw, flag)
    status, version, now = await curl("/timestamp")
    assert (status, version) == (200, wire)
    assert abs(int(now) - time.time()) < 5

    status, _, token = await curl("/provision/activate", "-d", "id=curl-dev")
    assert status == 200
    assert len(token) == 40
    auth = ("-H", f"X-Exosite-CIK: {token}")

    status, _, _ = await curl(
        "/onep:v1/stack/alias",
        *auth,
        "--data-urlencode",
        'data_in={"001": 21.5}',
        "-d",
        "uptime=3600",
    )
    assert status == 204
    status, _, body = await curl("/onep:v1/stack/alias?data_in&uptime", *auth)
    assert (status, body) == (200, "data_in=%7b%22001%22%3a+21.5%7d")

    await gw.services.state.set_values("demo", "curl-dev", {"config_io": '{"rate": 5}'})
    status, _, body = await curl(
        "/onep:v1/stack/alias?config_io&data_out",
        *auth,
        "-H",
        "Request-Timeout: 300000",
        "-H",
        "If-Modified-Since: 0",
    )
    assert (status, body) == (200, "config_io=%7b%22rate%22%3a+5%7d")
    status, _, _ = await curl("/onep:v1/stack/alias", *auth, "-d", 'config_io={"rate": 5}')
    assert status == 204
    assert not (await gw.services.state.get("demo", "curl-dev"))["config_io"].pending
    status, _, _ = await curl("/onep:v1/stack/alias?config_io", *auth, "-H", "Request-Timeout: 500")
    assert status == 304

    ts = int(time.time()) - 60
    status, _, _ = await curl(
        "/onep:v1/stack/record", *auth, "-d", f"alias=data_in&{ts}=%7B%22001%22%3A1%7D&{ts + 1}=2"
    )
    assert status == 204

    async def blob() -> AsyncIterator[bytes]:
        yield b"0123456789" * 1000

    await gw.services.content.put("demo", "fw.bin", blob(), description="firmware")
    status, _, body = await curl("/provision/download", *auth)
    assert (status, body) == (200, "fw.bin")
    status, _, body = await curl("/provision/download?id=fw.bin&info=true", *auth)
    assert status == 200
    assert body.startswith("application/octet-stream,10000,")
    status, _, body = await curl("/provision/download?id=fw.bin", *auth, "-r", "10-14")
    assert (status, body) == (206, "01234")

    mismatch = Curl(gw, flag)
    mismatch.common += ["-H", "Host: other.m2.localhost"]
    status, _, _ = await mismatch("/timestamp")
    assert status == 421


@pytest.mark.parametrize(
    ("flag", "wire"), [("--http2", "2"), ("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")]
)
async def test_curl_on_the_dev_port_upgrade_and_prior_knowledge(
    gw: TestGateway, flag: str, wire: str
) -> None:
    """Plain HTTP/2 (``Upgrade: h2c`` or the prior-knowledge preface) is handed from the
    fast path to hypercorn with the bytes already read; HTTP/1.1 stays on the fast path."""
    host = gw.devmode_fqdn()
    port = gw.ports["dev_http"]
    base = [
        "curl",
        "-sS",
        "--max-time",
        "20",
        flag,
        "--resolve",
        f"{host}:{port}:127.0.0.1",
        "-w",
        "\n%{http_code} %{http_version}",
    ]

    async def curl(path: str, *args: str) -> tuple[int, str, str]:
        result = await trio.run_process(
            [*base, *args, f"http://{host}:{port}{path}"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        body, _, tail = result.stdout.decode().rpartition("\n")
        status, version = tail.split()
        return int(status), version, body

    status, version, now = await curl("/timestamp")
    assert (status, version) == (200, wire)
    assert abs(int(now) - time.time()) < 5
    status, _, token = await curl("/provision/activate", "-d", f"id=h2c-{wire}-{len(flag)}")
    assert status == 200
    status, _, _ = await curl(
        "/onep:v1/stack/alias", "-H", f"X-Exosite-CIK: {token}", "-d", "data_in=h2c"
    )
    assert status == 204
