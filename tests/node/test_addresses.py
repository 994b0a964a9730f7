"""Device addresses in a multi-process node (``gateway serve --workers 2``): every worker
listens on IPv4 and ``::1`` (the sockets the supervisor bound) and reads PROXY headers from
the trusted proxy, so the address a device is judged by does not depend on which worker
accepted it (docs/decisions.md "Addresses and the PROXY protocol")."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.testing.node import pinned_to
from gateway.testing.server import TestGateway, gateway_process

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    block = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return SIG + b"\x21\x21" + struct.pack("!H", len(block)) + block


def request(
    gw: TestGateway, path: str, *, header: bytes = b"", host: str = "127.0.0.1", body: str = ""
) -> tuple[int, str]:
    """One HTTP/1.1 request over TLS (``header`` sent before the ClientHello)."""
    ctx = ssl.create_default_context(cafile=gw.ca)
    with socket.create_connection((host, gw.ports["tls"]), timeout=15) as raw:
        raw.sendall(header)
        with ctx.wrap_socket(raw, server_hostname=gw.fqdn()) as s:
            method = "POST" if body else "GET"
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {gw.fqdn()}\r\nConnection: close\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            s.sendall(head.encode() + body.encode())
            out = b""
            while chunk := s.recv(65536):
                out += chunk
    status = int(out.split(b" ", 2)[1])
    return status, out.split(b"\r\n\r\n", 1)[1].decode()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[TestGateway]:
    data = tmp_path_factory.mktemp("node-addr") / "data"
    shutil.copytree(pki_dir, data / "tls")
    extra = [
        "--host",
        "127.0.0.1,::1",
        "--proxy-protocol",
        "tls",
        "--proxy-trusted",
        "127.0.0.1",
    ]
    with gateway_process(data, dev=False, workers=2, timeout=60, extra=extra) as (_proc, gw):
        yield gw


@pytest.mark.parametrize("index", [1, 2])
def test_each_worker_reads_the_proxy_header_and_serves_ipv6(node: TestGateway, index: int) -> None:
    source = f"2001:db8::{index}"
    with pinned_to(node.info, index):
        header = v2_tcp6(source, "2001:db8::443", 40000 + index, 443)
        status, text = request(node, "/ip", header=header)
        assert (status, text) == (200, "32,1,13,184" + ",0" * 10 + ",4,67,1,187")
        status, token = request(node, "/provision/activate", header=header, body=f"id=w{index}")
        assert status == 200, token
        # untrusted ::1 without a header: its own address, eighteen bytes
        port = node.ports["tls"]
        status, text = request(node, "/ip", host="::1")
        assert text == "0," * 15 + f"1,{port >> 8},{port & 0xFF}"
        # the trusted proxy without a header: refused (required by default)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            request(node, "/ip")
    with httpx.Client(base_url=node.api, headers=node.admin_headers, timeout=30) as api:
        r = api.get("/connectors/demo/events", params={"after": 0, "ip": source})
    assert [(e["type"], e["identity"]) for e in r.json()["items"]] == [("provisioned", f"w{index}")]
