"""MQTT conformance fixtures: a raw-bytes client against a whole gateway on 127.0.0.1
(``gw`` and ``pki_dir`` come from ``tests/conftest.py``).

The client speaks only bytes built by :mod:`gateway.testing.mqtt_bytes` (hand-written, no
code shared with the gateway's codec) and compares what comes back with bytes built the
same way, so every assertion here can fail.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from gateway.model import LogRecord
from gateway.services.logs import LogFilter, Subscription
from gateway.testing.server import TestGateway, open_test_gateway

READ_TIMEOUT_S = 5.0


class RawClient:
    """A TCP client that sends raw bytes and reads exact byte counts with a timeout."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self, n: int) -> bool:
        with trio.move_on_after(READ_TIMEOUT_S):
            while len(self.buf) < n:
                try:
                    chunk = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return False
                if not chunk:
                    return False
                self.buf += chunk
            return True
        raise AssertionError(f"timed out waiting for {n} bytes, have {bytes(self.buf)!r}")

    async def recv_exactly(self, n: int) -> bytes:
        """``n`` bytes, or AssertionError if the connection closes or stays silent."""
        if not await self._fill(n):
            raise AssertionError(f"closed after {bytes(self.buf)!r}, expected {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def expect(self, expected: bytes) -> None:
        got = await self.recv_exactly(len(expected))
        assert got == expected

    async def recv_packet(self) -> bytes:
        """One whole MQTT packet (fixed header + remaining length + body)."""
        head = await self.recv_exactly(2)
        remaining, shift, header = head[1] & 0x7F, 7, bytearray(head)
        more = head[1] & 0x80
        while more:
            (b,) = await self.recv_exactly(1)
            header.append(b)
            remaining |= (b & 0x7F) << shift
            shift += 7
            more = b & 0x80
        return bytes(header) + await self.recv_exactly(remaining)

    async def expect_closed(self) -> bytes:
        """Wait for EOF (or a reset); returns whatever arrived before it."""
        with trio.fail_after(READ_TIMEOUT_S + 5):
            while True:
                try:
                    chunk = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                self.buf += chunk
        rest = bytes(self.buf)
        self.buf.clear()
        return rest

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = RawClient(stream)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def mqtt(gw: TestGateway) -> Callable[..., AbstractAsyncContextManager[RawClient]]:
    """``async with mqtt() as c``: a raw client on the dev plain-MQTT port (demo connector)."""

    def open_client(port: int | None = None) -> AbstractAsyncContextManager[RawClient]:
        return raw_client(port or gw.ports["dev_mqtt"])

    return open_client


@pytest.fixture
async def device(gw: TestGateway) -> tuple[str, str]:
    """A provisioned token device of the demo connector: (identity, token)."""
    token = secrets.token_hex(20)
    await gw.services.devices.add("demo", "dev-1", auth_type="token", key=token)
    return "dev-1", token


class DebugLog:
    """The demo connector's debug records, as the live-log subscribers see them."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.seen: list[LogRecord] = []

    async def wait_for(self, event: str, reason: str | None = None) -> LogRecord:
        with trio.fail_after(READ_TIMEOUT_S):
            for rec in self.seen:
                if rec.event == event and (reason is None or rec.reason == reason):
                    return rec
            while True:
                rec = await self.sub.receive.receive()
                self.seen.append(rec)
                if rec.event == event and (reason is None or rec.reason == reason):
                    return rec


@pytest.fixture
async def debug_log(gw: TestGateway) -> AsyncIterator[DebugLog]:
    async with gw.services.logs.subscribe(LogFilter("demo", kinds=["debug"])) as sub:
        yield DebugLog(sub)


@pytest.fixture
def start_gateway(
    tmp_path: Path, pki_dir: Path
) -> Callable[..., AbstractAsyncContextManager[TestGateway]]:
    """``async with start_gateway(connect_timeout_s=0.5) as gw``: a gateway with overrides."""

    def start(**overrides: object) -> AbstractAsyncContextManager[TestGateway]:
        data = tmp_path / "custom"
        shutil.copytree(pki_dir, data / "tls")
        return open_test_gateway(data, **overrides)

    return start


async def _eventually(predicate: Callable[[], Awaitable[object]], timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` (a store read: committed state has no change event to wait on)."""
    for _ in range(int(timeout_s / 0.02)):
        if await predicate():
            return
        await trio.sleep(0.02)
    raise AssertionError(f"condition not reached within {timeout_s} s")


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    return _eventually
