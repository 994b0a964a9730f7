"""The HTTP/1.1 fast path's Trio driver (gateway/device/http/h1.py) over memory streams, on
Trio's MockClock where deadlines matter: the head deadline, the body progress deadline and
the keep-alive timer are distinct; pipelined writes share one store submission and are
answered in order after the commit.  Real services over a real SQLite store (tmp_path)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from gateway.device.http.app import DeviceApp
from gateway.device.http.asgi import HttpConnection
from gateway.device.http.h1 import H1Limits, HttpDate, serve_h1
from gateway.model import ConnectionInfo, LogRecord, PeerAddress, Transport
from gateway.services.bundle import Services
from gateway.services.connectors import Resource
from gateway.services.events import EventFilter
from gateway.store.api import EventMeta

HOST = "demo.m2.localhost"
LIMITS = H1Limits(head_timeout_s=10.0, body_timeout_s=30.0, keep_alive_s=120.0)
_DATE = re.compile(rb"date: [^\r]*\r\n")


@pytest.fixture
async def demo(services: Services) -> Services:
    await services.connectors.create(
        name="Demo", connector_id="demo", resources=[Resource(alias="data_in")]
    )
    return services


async def _no_fallback(stream: trio.abc.Stream, conn: HttpConnection) -> None:
    raise AssertionError("nothing here goes to hypercorn")


@asynccontextmanager
async def connection(
    services: Services, limits: H1Limits = LIMITS, records: list[LogRecord] | None = None
) -> AsyncIterator[trio.abc.Stream]:
    """A client stream whose peer is one fast-path connection (SNI connector ``demo``)."""
    client, server = trio.testing.memory_stream_pair()
    info = ConnectionInfo(
        connection_id="c1",
        connector_id="demo",
        peer=PeerAddress("127.0.0.1", 5000),
        transport=Transport.TLS,
    )
    sink = records if records is not None else []
    app = DeviceApp(services, body_timeout_s=limits.body_timeout_s)
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            await serve_h1(
                server,
                HttpConnection(info),
                app=app,
                limits=limits,
                fallback=_no_fallback,
                debug=sink.append,
                date=HttpDate(),
            )
            await server.aclose()

        nursery.start_soon(run)
        yield client
        nursery.cancel_scope.cancel()


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    out = b""
    while chunk := await stream.receive_some(65536):
        out += chunk
    return out


async def read_answers(stream: trio.abc.Stream, n: int) -> list[bytes]:
    """``n`` answers without bodies or with Content-Length ones."""
    buf = b""
    answers: list[bytes] = []
    while len(answers) < n:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[: end + 4]
            m = re.search(rb"content-length: (\d+)", head)
            size = int(m.group(1)) if m else 0
            if len(buf) >= end + 4 + size:
                answers.append(_DATE.sub(b"", buf[: end + 4 + size]))
                buf = buf[end + 4 + size :]
                continue
        chunk = await stream.receive_some(65536)
        assert chunk, (answers, buf)
        buf += chunk
    return answers


async def test_head_deadline_is_408_from_the_first_byte(
    demo: Services, autojump_clock: trio.testing.MockClock
) -> None:
    """A head trickling in (a byte every 3 s) still ends at head_timeout_s after its first
    byte: progress does not extend it.  408 in the framing-error shape, then close."""
    records: list[LogRecord] = []
    async with connection(demo, records=records) as client:
        start = trio.current_time()
        await client.send_all(b"GET /timestamp HTTP/1.1\r\n")
        for byte in b"Host: " + HOST.encode():
            await trio.sleep(3)
            try:
                await client.send_all(bytes([byte]))
            except trio.BrokenResourceError:
                break
        out = await read_until_eof(client)
        took = trio.current_time() - start
    assert _DATE.sub(b"", out) == b"HTTP/1.1 408 \r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert 10.0 <= took < 13.0
    assert [(r.event, r.reason) for r in records] == [("http_refused", "request_timeout")]


async def test_first_bytes_that_could_be_the_h2_preface_are_under_the_head_deadline(
    demo: Services, autojump_clock: trio.testing.MockClock
) -> None:
    async with connection(demo) as client:
        start = trio.current_time()
        await client.send_all(b"PR")
        out = await read_until_eof(client)
        assert _DATE.sub(b"", out).startswith(b"HTTP/1.1 408 ")
        assert trio.current_time() - start == pytest.approx(10, abs=1)


async def test_body_deadline_is_progress_and_answered_by_the_app(
    demo: Services, autojump_clock: trio.testing.MockClock
) -> None:
    """A body that keeps moving (a byte every 20 s, deadline 30 s) is read to the end; one
    that stalls for 30 s gets the app's 408 with Connection: close."""
    async with connection(demo) as client:
        start = trio.current_time()
        activate = f"POST /provision/activate HTTP/1.1\r\nHost: {HOST}\r\n"
        await client.send_all(f"{activate}Content-Length: 7\r\n\r\n".encode())
        for byte in b"foo=bar":
            await trio.sleep(20)
            await client.send_all(bytes([byte]))
        (answer,) = await read_answers(client, 1)
        assert answer.startswith(b"HTTP/1.1 400 ")  # the body arrived: no id in it
        assert trio.current_time() - start == pytest.approx(140, abs=1)
        start = trio.current_time()
        await client.send_all(f"{activate}Content-Length: 50\r\n\r\nid=".encode())
        out = await read_until_eof(client)
        took = trio.current_time() - start
    assert _DATE.sub(b"", out) == (
        b"HTTP/1.1 408 \r\nserver: gateway\r\ncontent-length: 29\r\n"
        b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n\r\n"
        b"request body stalled for 30 s"
    )
    assert 30.0 <= took < 33.0


async def test_keep_alive_timer_closes_silently_and_only_when_idle(
    demo: Services, autojump_clock: trio.testing.MockClock
) -> None:
    async with connection(demo) as client:
        await trio.sleep(100)  # idle from the start: the keep-alive timer, not the head's
        request = f"GET /timestamp HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        await client.send_all(request)
        (answer,) = await read_answers(client, 1)
        assert answer.startswith(b"HTTP/1.1 200 ")
        start = trio.current_time()
        out = await read_until_eof(client)
        assert out == b""  # no answer, just the close
        assert trio.current_time() - start == pytest.approx(120, abs=1)


async def test_pipelined_writes_share_one_submission_answered_in_order(demo: Services) -> None:
    """Three writes and a refused one in one burst: one store submission for the three
    (and one for the refusal's event), four answers in request order, the 204s after the
    commit."""
    token = await demo.devices.activate("demo", "dev-1", ip=None, meta=EventMeta())
    assert token is not None
    before = (await demo.store.stats()).submissions

    def write(value: str, tok: str = token) -> bytes:
        body = f"data_in={value}".encode()
        return (
            f"POST /onep:v1/stack/alias HTTP/1.1\r\nHost: {HOST}\r\nX-Exosite-CIK: {tok}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async with connection(demo) as client:
        await client.send_all(write("a") + write("b") + write("x", "0" * 40) + write("c"))
        answers = await read_answers(client, 4)
        # the refusal's event was submitted before the writes' shared submission
        assert (await demo.store.stats()).submissions == before + 2
    assert [a.split(b"\r\n")[0] for a in answers] == [
        b"HTTP/1.1 204 ",
        b"HTTP/1.1 204 ",
        b"HTTP/1.1 401 ",
        b"HTTP/1.1 204 ",
    ]
    assert (await demo.state.get("demo", "dev-1"))["data_in"].reported == "c"
    refused = await demo.events.read("demo", filt=EventFilter(types=("write_refused",)))
    assert [(e.type, e.reason) for e in refused] == [("write_refused", "not_authenticated")]


async def test_expect_continue_then_answer(demo: Services) -> None:
    async with connection(demo) as client:
        await client.send_all(
            f"POST /provision/activate HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\n"
            "Content-Length: 7\r\n\r\n".encode()
        )
        (interim,) = await read_answers(client, 1)
        assert interim == b"HTTP/1.1 100 \r\n\r\n"
        await client.send_all(b"foo=bar")
        (answer,) = await read_answers(client, 1)
        assert answer.startswith(b"HTTP/1.1 400 ")
