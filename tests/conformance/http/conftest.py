"""A real gateway (open_test_gateway: ephemeral ports on 127.0.0.1) and a raw HTTP/1.1
client built on h11, so the tests control every byte they send and see every header the
gateway answers.  Expected values never come from the gateway's own encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from gateway.testing.server import TestGateway, open_test_gateway
from gateway.testing.tlsclient import client_context, open_tls_client


@asynccontextmanager
async def running_gateway(tmp_path: Path, **overrides: Any) -> AsyncIterator[TestGateway]:
    async with open_test_gateway(tmp_path, **overrides) as gw:
        yield gw


_OPEN: list[trio.abc.Stream] = []  # client streams of the running test, closed after it


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(tmp_path) as gateway:
        try:
            yield gateway
        finally:
            while _OPEN:
                await trio.aclose_forcefully(_OPEN.pop())


class Response:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.header_list = [(k.decode().lower(), v.decode("latin-1")) for k, v in headers]
        self.headers = dict(self.header_list)
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class Client:
    """One keep-alive HTTP/1.1 connection driven by h11 (client side)."""

    def __init__(self, stream: trio.abc.Stream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)
        _OPEN.append(stream)

    @classmethod
    async def dev(cls, gw: TestGateway, host: str | None = None) -> Client:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_http"])
        return cls(stream, host if host is not None else gw.devmode_fqdn())

    @classmethod
    async def tls(
        cls,
        gw: TestGateway,
        *,
        sni: str | None = None,
        host: str | None = None,
        cert: tuple[str, str] | None = None,
    ) -> Client:
        ctx = client_context(
            gw.ca,
            alpn=["http/1.1"],
            cert_path=cert[0] if cert else None,
            key_path=cert[1] if cert else None,
        )
        stream = await open_tls_client(gw.ports["tls"], sni or gw.fqdn(), ctx)
        return cls(stream, host if host is not None else gw.fqdn())

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> Response:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("Host", self.host), *headers]
        if body or method in ("POST", "PUT"):
            hdrs.append(("Content-Length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        with trio.fail_after(timeout):
            return await self._response()

    async def _response(self) -> Response:
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                self.conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = list(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Response(status, headers, b"".join(chunks))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a fresh plain connection; return everything until the server
    closes (or the timeout)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    _OPEN.append(stream)
    out = b""
    async with stream:
        with trio.move_on_after(timeout):
            try:
                await stream.send_all(data)
                while chunk := await stream.receive_some(65536):
                    out += chunk
            except trio.BrokenResourceError:
                pass  # the server closed with our bytes unread (RST): keep what arrived
    return out


async def activate(client: Client, identity: str) -> str:
    r = await client.request(
        "POST",
        "/provision/activate",
        body=f"id={identity}".encode(),
        headers=[("Content-Type", "application/x-www-form-urlencoded")],
    )
    assert r.status == 200, r
    return r.text


def cik(token: str) -> list[tuple[str, str]]:
    return [("X-Exosite-CIK", token)]


FORM = ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")

__all__ = ["FORM", "Client", "Response", "activate", "cik", "raw_exchange", "running_gateway"]
