"""The MQTT connection's deadlines (docs/protocol.md §12 item 8, MQTT-3.1.2-24), on trio's
``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``): the clock jumps to
the next deadline as soon as every task waits, so "silent for 15 s" costs no wall time and
the close is checked to the exact instant.

The connection is the real handler (``make_mqtt_server``) over real services and a real
SQLite store in ``tmp_path``, on ``trio.testing.memory_stream_pair()`` instead of a socket;
the client speaks bytes from gateway.testing.mqtt_bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from gateway.device.mqtt.connection import make_mqtt_server
from gateway.model import ConnectionInfo, LogRecord, PeerAddress, Transport
from gateway.mqtt.session import IDLE_TIMEOUT_S
from gateway.services.bundle import Services
from gateway.services.connectors import Resource
from gateway.services.logs import LogFilter
from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_pingreq,
    gen_pingresp,
    pack_remaining_length,
)

CID = "kcon"


@pytest.fixture
async def token(services: Services) -> str:
    await services.connectors.create(name="k", connector_id=CID, resources=[Resource("data_in")])
    secret = secrets.token_hex(20)
    await services.devices.add(CID, "dev-1", auth_type="token", key=secret)
    return secret


class Client:
    """The device end of a memory stream pair whose other end a real connection serves."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def expect(self, expected: bytes) -> None:
        while len(self.buf) < len(expected):
            chunk = await self.stream.receive_some(65536)
            assert chunk, f"closed after {bytes(self.buf)!r}"
            self.buf += chunk
        got = bytes(self.buf[: len(expected)])
        del self.buf[: len(expected)]
        assert got == expected

    async def closed_at(self) -> float:
        """Wait for EOF; return the (mock) time it came."""
        while chunk := await self.stream.receive_some(65536):
            self.buf += chunk
        return trio.current_time()


@pytest.fixture
def connect(services: Services, nursery: trio.Nursery) -> Callable[[], Awaitable[Client]]:
    """``await connect()``: a new connection served as the front door would (the stream is
    closed when the handler returns)."""
    serve = make_mqtt_server(services)

    async def open_one() -> Client:
        client, server = trio.testing.memory_stream_pair()
        info = ConnectionInfo(
            connection_id=secrets.token_hex(4),
            connector_id=CID,
            peer=PeerAddress("127.0.0.9", 1),
            transport=Transport.DEV_MQTT,
        )

        async def run() -> None:
            try:
                await serve(server, info)
            finally:
                await server.aclose()

        nursery.start_soon(run)
        return Client(client)

    return open_one


async def _reason(services: Services, start: trio.Event, out: list[LogRecord]) -> None:
    async with services.logs.subscribe(LogFilter(CID, kinds=["debug"])) as sub:
        start.set()
        while True:  # until cancelled; each record is kept as it arrives
            out.append(await sub.receive.receive())


async def test_keepalive_expires_at_one_and_a_half(
    services: Services, token: str, connect, autojump_clock: trio.testing.MockClock
) -> None:
    """1.5 × keep-alive after the last complete packet, not before; a PINGREQ in time
    moves the deadline."""
    c = await connect()
    await c.stream.send_all(gen_connect("", keepalive=10, username="", password=token))
    await c.expect(gen_connack(0))
    await trio.sleep(14.9)  # just before 15 s of silence
    await c.stream.send_all(gen_pingreq())
    await c.expect(gen_pingresp())
    pinged = trio.current_time()
    assert await c.closed_at() == pytest.approx(pinged + 15.0)
    await services.store.write([])  # a barrier: submissions commit in order
    (ev,) = [e for e in await services.events.read(CID, limit=100) if e.type == "disconnect"]
    assert ev.reason == "idle_timeout"
    assert not (await services.devices.get(CID, "dev-1")).online


async def test_no_connect_within_the_connect_timeout_closes(
    services: Services, token: str, connect, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    c = await connect()
    assert await c.closed_at() == pytest.approx(start + services.config.connect_timeout_s)


async def test_keepalive_zero_means_the_idle_limit(
    services: Services, token: str, connect, autojump_clock: trio.testing.MockClock
) -> None:
    c = await connect()
    await c.stream.send_all(gen_connect("", keepalive=0, username="", password=token))
    await c.expect(gen_connack(0))
    connected = trio.current_time()
    assert await c.closed_at() == pytest.approx(connected + IDLE_TIMEOUT_S)


async def test_trickled_bytes_do_not_keep_a_connection_alive(
    services: Services, token: str, connect, autojump_clock: trio.testing.MockClock
) -> None:
    """Keep-alive counts complete packets: a byte every second of an endless PUBLISH does
    not move the deadline, and the close names ``idle_timeout``."""
    records: list[LogRecord] = []
    ready = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_reason, services, ready, records)
        await ready.wait()
        c = await connect()
        await c.stream.send_all(gen_connect("", keepalive=2, username="", password=token))
        await c.expect(gen_connack(0))
        start = trio.current_time()
        await c.stream.send_all(b"\x30" + pack_remaining_length(10_000))

        async def trickle() -> None:
            while True:
                await trio.sleep(1.0)
                try:
                    await c.stream.send_all(b"a")
                except trio.BrokenResourceError:
                    return  # closed by the gateway

        nursery.start_soon(trickle)
        assert await c.closed_at() == pytest.approx(start + 3.0)
        nursery.cancel_scope.cancel()
    (disconnect,) = [r for r in records if r.event == "disconnect"]
    assert disconnect.reason == "idle_timeout"
