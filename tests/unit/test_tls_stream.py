"""TLSStream over in-memory transports (no sockets): trio's test_ssl.py approach.

The peer is the stdlib ``ssl`` module over ``trio.SSLStream`` (an independent TLS stack),
or a pyOpenSSL client where the test needs renegotiation.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trio.testing
from OpenSSL import SSL

from gateway.model import Transport
from gateway.testing.certs import MemoryDirectory, TestPKI
from gateway.tls.contexts import ConnectorTLS, ServerContexts
from gateway.tls.stream import TLSStream


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def contexts(pki: TestPKI) -> ServerContexts:
    directory = MemoryDirectory()
    directory.put(ConnectorTLS("c1", None, None, None, False))
    return ServerContexts(
        directory, server_cert_path=pki.dev.server_cert, server_key_path=pki.dev.server_key
    )


def client_ctx(pki: TestPKI, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.dev.ca_cert)
    if version is not None:
        ctx.maximum_version = version
    return ctx


async def pair(
    pki: TestPKI, contexts: ServerContexts, version: ssl.TLSVersion | None = None
) -> tuple[TLSStream, trio.SSLStream[trio.abc.Stream]]:
    client_transport, server_transport = trio.testing.memory_stream_pair()
    server = TLSStream(server_transport, contexts.new_connection(Transport.TLS))
    client = trio.SSLStream(
        client_transport, client_ctx(pki, version), server_hostname="c1.m2.localhost"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client


@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]
)
async def test_handshake_and_echo_both_directions(
    pki: TestPKI, contexts: ServerContexts, version: ssl.TLSVersion, name: str
) -> None:
    server, client = await pair(pki, contexts, version)
    assert server.tls_version == name
    assert client.version() == name
    assert server.server_name == "c1.m2.localhost"
    assert server.alpn is None
    assert server.peer_certificate() is None
    await client.send_all(b"ping")
    assert await server.receive_some(100) == b"ping"
    await server.send_all(b"pong")
    assert await client.receive_some(100) == b"pong"
    assert "ECDSA" in (server.cipher or "") or name == "TLSv1.3"


async def test_concurrent_bulk_transfer(pki: TestPKI, contexts: ServerContexts) -> None:
    """send_all and receive_some run in different tasks at once, 1 MiB each way."""
    server, client = await pair(pki, contexts)
    blob = bytes(range(256)) * 4096

    async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
        while len(into) < len(blob):
            into += await stream.receive_some(65536)

    got_server, got_client = bytearray(), bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain, server, got_server)
        nursery.start_soon(drain, client, got_client)
        nursery.start_soon(server.send_all, blob)
        nursery.start_soon(client.send_all, blob)
    assert got_server == blob
    assert got_client == blob


async def test_receive_size_limit_and_validation(pki: TestPKI, contexts: ServerContexts) -> None:
    server, client = await pair(pki, contexts)
    await client.send_all(b"abcdef")
    assert await server.receive_some(4) == b"abcd"
    assert await server.receive_some(4) == b"ef"
    with pytest.raises(ValueError):
        await server.receive_some(0)


async def test_one_receive_returns_every_record_that_arrived(
    pki: TestPKI, contexts: ServerContexts
) -> None:
    """A device that sends one PUBLISH per TLS record (one send per message): everything
    that arrived comes back from one receive_some, not one record per call."""
    server, client = await pair(pki, contexts)
    messages = [bytes([0x30, 5]) + b"m%03d" % i for i in range(300)]
    for m in messages:
        await client.send_all(m)  # one record each
    assert await server.receive_some(65536) == b"".join(messages)
    await client.send_all(b"x" * 40_000)  # three records: a limit still applies
    assert await server.receive_some(30_000) == b"x" * 30_000
    assert await server.receive_some(65536) == b"x" * 10_000


class _CountingTransport(trio.abc.Stream):
    """A real stream that counts the writes passing through it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes: list[int] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(len(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_one_send_all_is_full_records_and_one_transport_write(
    pki: TestPKI, contexts: ServerContexts
) -> None:
    """4,000 PUBACKs (16 KB) in one send_all: one 16 KiB record, one transport write; 100
    KB: seven records, still one write."""
    client_transport, server_transport = trio.testing.memory_stream_pair()
    counting = _CountingTransport(server_transport)
    server = TLSStream(counting, contexts.new_connection(Transport.TLS))
    client = trio.SSLStream(
        client_transport, client_ctx(pki, ssl.TLSVersion.TLSv1_3), server_hostname="c1.m2.localhost"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    pubacks = b"\x40\x02\x00\x01" * 4000
    counting.writes.clear()
    await server.send_all(pubacks)
    # the first write also carries the TLS 1.3 session tickets held back after the handshake
    (first,) = counting.writes
    got = b""
    while len(got) < len(pubacks):
        got += await client.receive_some(65536)
    assert got == pubacks
    counting.writes.clear()
    await server.send_all(b"y" * 100_000)
    assert counting.writes == [100_000 + 7 * 22]  # 6 x 16 KiB + 1 record, 22 bytes each
    got = b""
    while len(got) < 100_000:
        got += await client.receive_some(65536)
    assert first > len(pubacks)


async def test_two_receivers_conflict(pki: TestPKI, contexts: ServerContexts) -> None:
    server, _client = await pair(pki, contexts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some, 10)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some(10)
        nursery.cancel_scope.cancel()


async def test_clean_close_by_peer_reads_eof(pki: TestPKI, contexts: ServerContexts) -> None:
    server, client = await pair(pki, contexts)
    await client.aclose()  # sends close_notify
    assert await server.receive_some(10) == b""
    await server.aclose()
    await server.aclose()  # idempotent


async def test_unclean_close_by_peer_reads_eof(pki: TestPKI, contexts: ServerContexts) -> None:
    server, client = await pair(pki, contexts)
    transport = client.transport_stream
    assert isinstance(transport, trio.StapledStream)
    await transport.send_stream.aclose()  # TCP-style FIN, no close_notify
    assert await server.receive_some(10) == b""
    await server.aclose()


async def test_server_close_sends_close_notify(pki: TestPKI, contexts: ServerContexts) -> None:
    server, client = await pair(pki, contexts)
    await server.send_all(b"bye")
    await server.aclose()
    assert await client.receive_some(10) == b"bye"
    assert await client.receive_some(10) == b""  # strict SSLStream: only close_notify is EOF
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"more")


async def test_handshake_failure_is_broken_resource(pki: TestPKI, contexts: ServerContexts) -> None:
    """An unknown SNI fails the handshake; the client gets the fatal alert, not a bare EOF."""
    client_transport, server_transport = trio.testing.memory_stream_pair()
    server = TLSStream(server_transport, contexts.new_connection(Transport.TLS))
    client = trio.SSLStream(client_transport, client_ctx(pki), server_hostname="x.m2.localhost")

    async def server_side() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some(10)
        await server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
    assert "HANDSHAKE_FAILURE" in str(info.value.__cause__)


def _pyopenssl_client(pki: TestPKI) -> SSL.Connection:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.load_verify_locations(pki.dev.ca_cert)
    conn = SSL.Connection(ctx, None)
    conn.set_tlsext_host_name(b"c1.m2.localhost")
    conn.set_connect_state()
    return conn


async def test_renegotiation_refused(pki: TestPKI, contexts: ServerContexts) -> None:
    client_transport, server_transport = trio.testing.memory_stream_pair()
    server = TLSStream(server_transport, contexts.new_connection(Transport.TLS))
    client = TLSStream(client_transport, _pyopenssl_client(pki), server_side=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    assert client.tls_version == "TLSv1.2"
    assert client.connection.renegotiate()
    got = b""
    with trio.move_on_after(2):
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal got
                got = await server.receive_some(10)

            nursery.start_soon(read)
            try:
                await client.send_all(b"after")
                await client.receive_some(10)
            except trio.BrokenResourceError:
                pass
            nursery.cancel_scope.cancel()
    assert server.connection.total_renegotiations() == 0
    assert client.connection.total_renegotiations() <= 1
    assert client.connection.renegotiate_pending() or client._state.value != "ok"


def test_tmp_path_is_not_leaking_keys(pki: TestPKI) -> None:
    assert Path(pki.dev.server_key).stat().st_mode & 0o777 == 0o600


async def test_grown_bios_are_renewed_once_drained(pki: TestPKI, contexts: ServerContexts) -> None:
    """OpenSSL's memory BIOs never shrink: the stream swaps in fresh ones after the
    handshake and after a burst, once everything was read; traffic goes on unharmed."""
    server, client = await pair(pki, contexts)
    conn = server.connection
    after_handshake = (conn._into_ssl, conn._from_ssl)  # type: ignore[attr-defined]
    await client.send_all(b"small")
    assert await server.receive_some(100) == b"small"
    assert (conn._into_ssl, conn._from_ssl) == after_handshake  # type: ignore[attr-defined]
    blob = b"z" * 100_000
    await client.send_all(blob)
    got = b""
    while len(got) < len(blob):
        got += await server.receive_some(65536)
    assert got == blob
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some, 100)  # drains, finds nothing: renews
        await trio.testing.wait_all_tasks_blocked()
        assert (conn._into_ssl, conn._from_ssl) != after_handshake  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
    await client.send_all(b"after")
    assert await server.receive_some(100) == b"after"
    await server.send_all(b"reply")
    assert await client.receive_some(100) == b"reply"
