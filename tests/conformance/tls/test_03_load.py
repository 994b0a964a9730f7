"""Admission control and robustness under load: handshake deadline, 1,000 concurrent
handshakes, slowloris clients, certificate swap under 1,000 live connections."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio

from gateway.testing.tlsclient import (
    CONNACK_ACCEPTED,
    Gateway,
    client_context,
    mqtt_connect_bytes,
    open_tls_client,
    start_gateway,
)
from gateway.tls.pki import fingerprint, issue_server_cert, server_names

CLIENTS = 1000


async def connect_mqtt(gw: Gateway, ctx: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    stream = await open_tls_client(gw.ports["tls"], "open.m2.localhost", ctx)
    await stream.send_all(mqtt_connect_bytes())
    assert await stream.receive_some(4) == CONNACK_ACCEPTED
    return stream


async def open_many(
    gw: Gateway, ctx: ssl.SSLContext, count: int
) -> list[trio.SSLStream[trio.SocketStream]]:
    streams: list[trio.SSLStream[trio.SocketStream]] = []

    async def one() -> None:
        streams.append(await connect_mqtt(gw, ctx))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return streams


async def close_all(streams: list[trio.SSLStream[trio.SocketStream]]) -> None:
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(trio.aclose_forcefully, stream)


async def test_silent_client_closed_at_handshake_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    gw = await start_gateway(nursery, tmp_path, handshake_timeout_s=0.3)
    tcp = await trio.open_tcp_stream("127.0.0.1", gw.ports["tls"])
    start = trio.current_time()
    with trio.fail_after(5):
        assert await tcp.receive_some() == b""
    elapsed = trio.current_time() - start
    await tcp.aclose()
    assert 0.25 <= elapsed < 3
    assert gw.reasons() == ["idle_timeout"]
    gw.scope.cancel()


async def test_slowloris_does_not_delay_a_good_client(gateway: Gateway) -> None:
    slow: list[trio.SocketStream] = []
    for _ in range(200):
        tcp = await trio.open_tcp_stream("127.0.0.1", gateway.ports["tls"])
        await tcp.send_all(b"\x16\x03\x01\x02")  # a TLS record header, never finished
        slow.append(tcp)
    await trio.sleep(0.2)  # let the front door pick them all up
    ctx = client_context(gateway.ca_path, alpn=["mqtt"])
    worst = 0.0
    for _ in range(5):
        start = trio.current_time()
        stream = await connect_mqtt(gateway, ctx)
        worst = max(worst, trio.current_time() - start)
        await stream.aclose()
    print(
        f"good client handshake+CONNACK beside 200 slowloris clients: worst {worst * 1000:.1f} ms"
    )
    assert worst < 2.0
    for tcp in slow:
        await tcp.aclose()


@pytest.mark.slow
async def test_thousand_handshakes_then_certificate_swap_drops_none(gateway: Gateway) -> None:
    """1,000 concurrent TLS handshakes complete; then the wildcard certificate is swapped
    under those 1,000 live connections: new handshakes get the new certificate, and every
    old connection still answers."""
    ctx = client_context(gateway.ca_path, alpn=["mqtt"])
    start = trio.current_time()
    with trio.fail_after(50):
        streams = await open_many(gateway, ctx, CLIENTS)
    elapsed = trio.current_time() - start
    print(f"{CLIENTS} concurrent TLS handshakes + CONNACK in {elapsed:.2f} s (client+server)")
    assert len(streams) == CLIENTS
    assert len(gateway.recorder.seen) == CLIENTS
    assert gateway.debug == []
    old_fp = fingerprint(await trio.Path(gateway.pki.dev.server_cert).read_text())
    chain, key = issue_server_cert(
        gateway.pki.ca_pem, gateway.pki.ca_key_pem, server_names("localhost")
    )
    await trio.Path(gateway.pki.dev.server_cert).write_text(chain)
    await trio.Path(gateway.pki.dev.server_key).write_text(key)
    gateway.contexts.reload_server_cert()
    fresh = await connect_mqtt(gateway, ctx)
    der = fresh.getpeercert(binary_form=True)
    assert der is not None
    assert fingerprint(der) == fingerprint(chain) != old_fp
    await fresh.aclose()
    alive = 0

    async def ping(stream: trio.SSLStream[trio.SocketStream]) -> None:
        nonlocal alive
        await stream.send_all(b"\xc0\x00")
        if await stream.receive_some(2) == b"\xc0\x00":
            alive += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(ping, stream)
    assert alive == CLIENTS
    assert gateway.debug == []
    await close_all(streams)
