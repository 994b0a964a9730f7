"""Request smuggling shapes, slow clients, long keep-alive connections and cancelled HTTP/2
long-polls, over real sockets with raw bytes (RFC 9112 §6.1, §7.1; RFC 9113 §8.1; docs/
decisions.md "HTTP device API").  ``fast`` is the HTTP/1.1 fast path, ``hypercorn`` the
full stack (``http_fast_path = false``), which still serves HTTP/2 and upgrades."""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpx
import pytest
import trio

from gateway.testing.server import TestGateway, open_test_gateway
from gateway.testing.tlsclient import client_context, open_tls_client

from .conftest import Client, activate

ALIAS = "/onep:v1/stack/alias"
DEADLINE_S = 0.5  # head and body deadlines of these gateways
FRAMING_400 = b"HTTP/1.1 400 \r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_DATE = re.compile(rb"date: [^\r]*\r\n")
PATHS: dict[str, dict[str, Any]] = {"fast": {}, "hypercorn": {"http_fast_path": False}}


@pytest.fixture(params=sorted(PATHS))
async def any_gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with open_test_gateway(
        tmp_path / "data",
        http_head_timeout_s=DEADLINE_S,
        http_body_timeout_s=DEADLINE_S,
        **PATHS[request.param],
    ) as gw:
        yield gw


@pytest.fixture
async def fast_gw(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with open_test_gateway(
        tmp_path / "data", http_head_timeout_s=DEADLINE_S, http_body_timeout_s=DEADLINE_S
    ) as gw:
        yield gw


async def exchange(gw: TestGateway, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh dev-port connection; everything until the server closes
    (the test fails if it does not close within ``timeout``)."""
    stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_http"])
    out = b""
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(timeout):
            try:
                while chunk := await stream.receive_some(65536):
                    out += chunk
            except trio.BrokenResourceError:
                pass
    return _DATE.sub(b"", out)


def head(gw: TestGateway, method: str, target: str, *lines: str) -> bytes:
    return (
        "\r\n".join([f"{method} {target} HTTP/1.1", f"Host: {gw.devmode_fqdn()}", *lines])
        + "\r\n\r\n"
    ).encode()


# -- request smuggling shapes ---------------------------------------------------------------


async def test_length_and_chunked_together_is_400_and_closes(any_gw: TestGateway) -> None:
    """RFC 9112 §6.1: a request with both Content-Length and Transfer-Encoding is answered
    400 (hypercorn's error shape on both paths), nothing is written, the connection closes."""
    token = await activate(await Client.dev(any_gw), "s-1")
    smuggled = head(
        any_gw,
        "POST",
        ALIAS,
        f"X-Exosite-CIK: {token}",
        "Content-Length: 13",
        "Transfer-Encoding: chunked",
    )
    out = await exchange(any_gw, smuggled + b"9\r\ndata_in=1\r\n0\r\n\r\n")
    assert out == FRAMING_400
    assert await any_gw.services.state.get("demo", "s-1") == {}


async def test_length_and_chunked_pipelined_behind_is_not_answered(fast_gw: TestGateway) -> None:
    """The smuggled request behind it is never answered; the 400 still arrives whole (the
    connection drops what the client sent before closing, so no reset destroys it)."""
    smuggled = head(fast_gw, "POST", "/ip", "Content-Length: 5", "Transfer-Encoding: chunked")
    out = await exchange(fast_gw, smuggled + b"0\r\n\r\n" + head(fast_gw, "GET", "/ip"))
    assert out == FRAMING_400


async def test_chunk_size_of_20_hex_digits_is_400_and_closes(fast_gw: TestGateway) -> None:
    token = await activate(await Client.dev(fast_gw), "s-2")
    req = head(fast_gw, "POST", ALIAS, f"X-Exosite-CIK: {token}", "Transfer-Encoding: chunked")
    out = await exchange(fast_gw, req + b"1" * 20 + b"\r\ndata_in=1")
    assert out == FRAMING_400
    assert await fast_gw.services.state.get("demo", "s-2") == {}


async def test_chunk_size_of_20_hex_digits_on_hypercorn_ends_at_the_body_deadline(
    tmp_path: Path,
) -> None:
    """h11 accepts 20 hex digits and waits for 2**80 bytes: with the fast path off the
    body deadline ends it (408, close) instead of holding the connection forever."""
    async with open_test_gateway(
        tmp_path / "data", http_fast_path=False, http_body_timeout_s=DEADLINE_S
    ) as gw:
        token = await activate(await Client.dev(gw), "s-3")
        req = head(gw, "POST", ALIAS, f"X-Exosite-CIK: {token}", "Transfer-Encoding: chunked")
        out = await exchange(gw, req + b"1" * 20 + b"\r\ndata_in=1")
    assert out.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in out


# -- slow clients -----------------------------------------------------------------------------


async def test_stalled_bodies_get_408_and_are_closed(any_gw: TestGateway) -> None:
    """50 connections that stop sending their bodies are all answered 408 and closed
    soon after the body deadline (they used to stay open indefinitely)."""
    token = await activate(await Client.dev(any_gw), "s-4")
    req = head(any_gw, "POST", ALIAS, f"X-Exosite-CIK: {token}", "Content-Length: 100")
    answers: list[bytes] = []

    async def one() -> None:
        answers.append(await exchange(any_gw, req + b"data_in=", timeout=15))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert len(answers) == 50
    assert all(a.startswith(b"HTTP/1.1 408 ") and b"connection: close" in a for a in answers)
    assert trio.current_time() - start < 15
    assert await any_gw.services.state.get("demo", "s-4") == {}


async def test_slow_head_gets_408_idle_keep_alive_does_not(fast_gw: TestGateway) -> None:
    """The head deadline runs from a request's first byte; a connection with no request in
    progress is under the (longer) keep-alive timer only."""
    out = await exchange(fast_gw, b"GET /timestamp HTTP/1.1\r\nHost: dem")
    assert out == b"HTTP/1.1 408 \r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    c = await Client.dev(fast_gw)
    assert (await c.request("GET", "/timestamp")).status == 200
    await trio.sleep(3 * DEADLINE_S)  # idle between requests: longer than the head deadline
    assert (await c.request("GET", "/timestamp")).status == 200


# -- long keep-alive connections ----------------------------------------------------------------


async def test_1500_requests_on_one_tls_http11_connection(
    fast_gw: TestGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """No request count ends a device connection (hypercorn's 1,000 did, with a spurious
    close at the 1,000th answer), and nothing is logged above INFO."""
    caplog.set_level(logging.INFO)
    c = await Client.tls(fast_gw)
    for i in range(1500):
        r = await c.request("GET", "/timestamp")
        assert r.status == 200, i
        assert "connection" not in r.headers, i
    assert [rec for rec in caplog.records if rec.levelno >= logging.WARNING] == []


async def test_1500_requests_on_one_h2_connection(
    fast_gw: TestGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP/2 (hypercorn): the 1,001st stream used to meet a GOAWAY and fail."""
    caplog.set_level(logging.INFO)
    ctx = ssl.create_default_context(cafile=fast_gw.ca)
    url = f"https://{fast_gw.fqdn()}:{fast_gw.ports['tls']}/timestamp"

    def run() -> list[tuple[int, str]]:
        with httpx.Client(http2=True, verify=ctx) as client:
            return [(r.status_code, r.http_version) for r in (client.get(url) for _ in range(1500))]

    results = await trio.to_thread.run_sync(run)
    assert set(results) == {(200, "HTTP/2")}
    assert [rec for rec in caplog.records if rec.levelno >= logging.WARNING] == []


# -- HTTP/2 long-poll cancelled by the client ---------------------------------------------------


class _H2Client:
    """A real HTTP/2 client state machine (the h2 library) over TLS with ALPN h2."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.responses: dict[int, int] = {}
        self.ended: set[int] = set()

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def request(self, path: str, headers: list[tuple[str, str]], authority: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        base = [(":method", "GET"), (":path", path), (":scheme", "https")]
        self.conn.send_headers(sid, [*base, (":authority", authority), *headers], end_stream=True)
        await self.flush()
        return sid

    async def pump_until_ended(self, sid: int) -> None:
        while sid not in self.ended:
            data = await self.stream.receive_some(65536)
            assert data, "server closed the connection"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.responses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    self.ended.add(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(len(event.data), event.stream_id)
            await self.flush()


@pytest.mark.parametrize("port", ["tls", "dev_http"])
async def test_h2_long_poll_reset_by_the_client_ends_at_once(
    fast_gw: TestGateway, port: str
) -> None:
    """RFC 9113 §8.1: RST_STREAM cancels the request; the long-poll must stop waiting at
    once (it used to hold its task and timer until its 60 s timeout), and the connection's
    other streams carry on.  ``tls``: HTTP/2 by ALPN; ``dev_http``: the prior-knowledge
    preface, handed from the fast path to hypercorn (the poll must wait there, too)."""
    token = await activate(await Client.dev(fast_gw), f"h2-{port}")
    waiting = fast_gw.services.control.change_event(("demo", f"h2-{port}")).statistics
    if port == "tls":
        authority = fast_gw.fqdn()
        ctx = client_context(fast_gw.ca, alpn=["h2"])
        stream: trio.abc.Stream = await open_tls_client(fast_gw.ports["tls"], authority, ctx)
    else:
        authority = fast_gw.devmode_fqdn()
        stream = await trio.open_tcp_stream("127.0.0.1", fast_gw.ports["dev_http"])
    async with stream:
        client = _H2Client(stream)
        await client.start()
        poll = [("x-exosite-cik", token), ("request-timeout", "60000")]
        sid = await client.request(f"{ALIAS}?data_out", poll, authority)
        with trio.fail_after(10):
            while waiting().tasks_waiting == 0:  # noqa: ASYNC110 (observing the poll: no event)
                await trio.sleep(0.01)
        client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        await client.flush()
        with trio.fail_after(2):
            while waiting().tasks_waiting:  # noqa: ASYNC110 (observing the poll: no event)
                await trio.sleep(0.01)
        other = await client.request("/timestamp", [], authority)
        with trio.fail_after(10):
            await client.pump_until_ended(other)
        assert client.responses[other] == 200
        assert sid not in client.responses


@pytest.mark.parametrize("authority", ["a b", "user@{fqdn}", "{fqdn}:x", "d\u00e9mo.example"])
async def test_h2_invalid_authority_is_400_and_the_connection_carries_on(
    fast_gw: TestGateway, authority: str
) -> None:
    """HTTP/2 carries the Host as ``:authority``: a value that is not ``host[:port]`` gets
    the device API's 400 (RFC 9112 §3.2, as HTTP/1.x answers it), not 421 as an unknown
    host; the connection's other streams carry on (docs/decisions.md "Malformed HTTP on
    every path")."""
    fqdn = fast_gw.fqdn()
    ctx = client_context(fast_gw.ca, alpn=["h2"])
    stream = await open_tls_client(fast_gw.ports["tls"], fqdn, ctx)
    async with stream:
        client = _H2Client(stream)
        await client.start()
        bad = await client.request("/timestamp", [], authority.replace("{fqdn}", fqdn))
        with trio.fail_after(10):
            await client.pump_until_ended(bad)
        assert client.responses[bad] == 400
        good = await client.request("/timestamp", [], fqdn)
        with trio.fail_after(10):
            await client.pump_until_ended(good)
        assert client.responses[good] == 200


async def test_h2_transfer_encoding_is_a_protocol_error(fast_gw: TestGateway) -> None:
    """``Transfer-Encoding`` cannot reach the device API over HTTP/2: it is a
    connection-specific field, a malformed request (RFC 9113 §8.2.2), reset by the h2
    library before any answer — so ``gzip, chunked`` never needs the 501 of HTTP/1.1."""
    fqdn = fast_gw.fqdn()
    ctx = client_context(fast_gw.ca, alpn=["h2"])
    stream = await open_tls_client(fast_gw.ports["tls"], fqdn, ctx)
    async with stream:
        client = _H2Client(stream)
        client.conn.config.validate_outbound_headers = False
        client.conn.config.normalize_outbound_headers = False  # else h2 drops the field
        await client.start()
        sid = client.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":path", ALIAS), (":scheme", "https")]
        headers += [(":authority", fqdn), ("transfer-encoding", "gzip, chunked")]
        client.conn.send_headers(sid, headers, end_stream=True)
        await client.flush()
        # a reset stream, or the server ending the connection (GOAWAY): refused either way
        with trio.fail_after(10), contextlib.suppress(AssertionError, h2.exceptions.ProtocolError):
            await client.pump_until_ended(sid)
        assert sid not in client.responses


# -- deeply nested JSON values ------------------------------------------------------------------


async def test_deeply_nested_json_value_is_text_to_the_device_api(fast_gw: TestGateway) -> None:
    """Form values are never parsed as JSON (docs/protocol.md §2.1): a raw JSON value nested
    100,000 deep is stored as the text it is, and reads back through both APIs."""
    c = await Client.dev(fast_gw)
    token = await activate(c, "deep-1")
    deep = "[" * 100_000 + "]" * 100_000
    r = await c.request(
        "POST", ALIAS, headers=[("X-Exosite-CIK", token)], body=f"data_in={deep}".encode()
    )
    assert r.status == 204
    r = await c.request("GET", f"{ALIAS}?data_in", headers=[("X-Exosite-CIK", token)])
    assert r.status == 200
    assert len(r.body) > 200_000
    async with httpx.AsyncClient(base_url=fast_gw.api, headers=fast_gw.admin_headers) as api:
        state = await api.get("/connectors/demo/devices/deep-1/state")
        assert state.status_code == 200
        assert state.json()["data_in"]["reported"] == deep


# -- an answer before the body ----------------------------------------------------------------


async def _read_answer(stream: trio.SocketStream, buf: bytearray) -> bytes:
    """One whole answer (head + content-length body) from ``stream``; the rest stays in
    ``buf``."""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed before an answer: {bytes(buf)!r}"
            buf += chunk
        end = buf.index(b"\r\n\r\n") + 4
        m = re.search(rb"content-length: (\d+)", bytes(buf[:end]), re.I)
        total = end + (int(m.group(1)) if m else 0)
        while len(buf) < total:
            chunk = await stream.receive_some(65536)
            assert chunk
            buf += chunk
    answer = bytes(buf[:total])
    del buf[:total]
    return _DATE.sub(b"", answer)


@pytest.mark.parametrize("rest", [20, 2_000_000], ids=["small", "large"])
async def test_refusal_before_the_body_keeps_or_says_close(any_gw: TestGateway, rest: int) -> None:
    """A refusal decided before the body is read (a wrong token), the body sent after the
    head as httpx does.  A small body is read and dropped and the connection carries the
    next request, as h11 does; a body too large to read for nothing is refused at once
    with ``Connection: close`` — never a silent close after a keep-alive answer, which a
    client reusing the connection sees as a lost answer (RFC 9112 §9.6)."""
    stream = await trio.open_tcp_stream("127.0.0.1", any_gw.ports["dev_http"])
    buf = bytearray()
    async with stream:
        await stream.send_all(
            head(any_gw, "POST", ALIAS, "X-Exosite-CIK: " + "0" * 40, f"Content-Length: {rest}")
        )
        if rest > 20:
            first = await _read_answer(stream, buf)  # answered without waiting for the body
            assert first.startswith(b"HTTP/1.1 401"), first
            assert b"connection: close" in first.lower()
            return
        await stream.send_all(b"a=" + b"1" * (rest - 2))
        await stream.send_all(head(any_gw, "GET", "/timestamp"))
        first = await _read_answer(stream, buf)
        assert first.startswith(b"HTTP/1.1 401"), first
        assert b"connection: close" not in first.lower()
        second = await _read_answer(stream, buf)
        assert second.startswith(b"HTTP/1.1 200"), second
