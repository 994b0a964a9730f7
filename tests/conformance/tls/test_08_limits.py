"""The front door's limits on real sockets (docs/decisions.md "Limits"): one address's
silent sockets do not hold the handshake slots other devices need, and a connection over
the connector's connection rate is closed right after the handshake, before a byte of
MQTT or HTTP is read."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.testing

from gateway.model import LogRecord
from gateway.services.limits import Limits
from gateway.services.logs import LogFilter
from gateway.testing.server import TestGateway, open_test_gateway
from gateway.testing.tlsclient import client_context, mqtt_connect_bytes, open_tls_client

SILENT = 40  # silent sockets from 127.0.0.2
DEADLINE_S = 3.0


@asynccontextmanager
async def gateway(tmp_path: Path, pki_dir: Path, **overrides: Any) -> AsyncIterator[TestGateway]:
    data = tmp_path / "data"
    shutil.copytree(pki_dir, data / "tls")
    async with open_test_gateway(data, **overrides) as gw:
        yield gw


async def device_handshake_behind_silent_sockets(gw: TestGateway) -> float:
    """Open :data:`SILENT` sockets from 127.0.0.2 that never send a byte, wait until the
    gateway has accepted them all, then time a device's TLS handshake from 127.0.0.3."""
    port = gw.ports["tls"]
    silent = [
        await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
        for _ in range(SILENT)
    ]
    try:
        await trio.testing.wait_all_tasks_blocked(0.05)  # every one accepted and waiting
        ctx = client_context(gw.ca, alpn=["http/1.1"])
        start = trio.current_time()
        stream = await open_tls_client(port, gw.fqdn(), ctx, local_address="127.0.0.3")
        elapsed = trio.current_time() - start
        await trio.aclose_forcefully(stream)
        with trio.fail_after(DEADLINE_S + 10):  # the gateway cuts them at the deadline
            for s in silent:
                with suppress(trio.BrokenResourceError):
                    assert await s.receive_some(1) == b""
    finally:
        for s in silent:
            await trio.aclose_forcefully(s)
    return elapsed


async def test_one_address_cannot_hold_the_handshake_slots(tmp_path, pki_dir):
    """8 handshake slots, 2 per address: 40 silent sockets of one address hold 2 at a
    time, the others wait for their address's turn; a device of another address gets a
    slot at once.  Every silent socket is cut at its deadline."""
    async with gateway(
        tmp_path, pki_dir, max_handshakes=8, max_handshakes_per_ip=2, handshake_timeout_s=DEADLINE_S
    ) as gw:
        async with gw.services.logs.subscribe(LogFilter(None, kinds=["debug"])) as sub:
            elapsed = await device_handshake_behind_silent_sockets(gw)
            assert elapsed < DEADLINE_S / 2, elapsed
            records: list[LogRecord] = []
            while len(records) < SILENT:
                rec = await sub.receive.receive()
                if rec.ip == "127.0.0.2" and rec.event == "connection_refused":
                    records.append(rec)
        # Two held their address's turns until the deadline (idle_timeout); as each
        # ended, a waiter accepted a moment later got the turn until its own deadline
        # (idle_timeout too); those still waiting at their deadline: ip_handshakes.
        reasons = [r.reason for r in records]
        assert set(reasons) == {"idle_timeout", "ip_handshakes"}, reasons
        assert reasons.count("ip_handshakes") >= 1, reasons
        key = (("connector", ""), ("limit", "ip_handshakes"))
        assert gw.services.metrics.limited[key] == reasons.count("ip_handshakes")


async def test_without_the_per_address_limit_the_device_waits(tmp_path, pki_dir):
    """The control: with ``max_handshakes_per_ip = 0`` the same silent sockets take every
    slot and the device waits until the deadline frees them."""
    async with gateway(
        tmp_path, pki_dir, max_handshakes=8, max_handshakes_per_ip=0, handshake_timeout_s=DEADLINE_S
    ) as gw:
        elapsed = await device_handshake_behind_silent_sockets(gw)
        assert elapsed > DEADLINE_S * 0.8, elapsed


async def test_tls_connection_over_the_rate_is_closed_after_the_handshake(tmp_path, pki_dir):
    async with gateway(tmp_path, pki_dir) as gw:
        connector = gw.services.registry.require("demo")
        limits = msgspec.convert(
            {
                **msgspec.to_builtins(connector.settings.limits),
                "connections_per_ip": {"rate": 0.001, "burst": 1},
            },
            Limits,
        )
        await gw.services.connectors.update(
            "demo", settings=msgspec.structs.replace(connector.settings, limits=limits)
        )
        ctx = client_context(gw.ca)
        port = gw.ports["mqtt_tls"]
        async with gw.services.logs.subscribe(LogFilter("demo", kinds=["debug"])) as sub:
            first = await open_tls_client(port, gw.fqdn(), ctx, local_address="127.0.0.2")
            await first.send_all(mqtt_connect_bytes())
            assert (await first.receive_some(4))[:1] == b"\x20"  # CONNACK: served
            await trio.aclose_forcefully(first)
            second = await open_tls_client(port, gw.fqdn(), ctx, local_address="127.0.0.2")
            with trio.fail_after(5):
                with suppress(trio.BrokenResourceError):
                    assert await second.receive_some(4) == b""
            await trio.aclose_forcefully(second)
            with trio.fail_after(5):
                while True:
                    rec = await sub.receive.receive()
                    if rec.event == "connection_refused":
                        break
        assert rec.reason == "connection_rate"
        assert rec.ip == "127.0.0.2"
        assert "SNI demo.m2.localhost" in (rec.detail or "")
        other = await open_tls_client(port, gw.fqdn(), ctx, local_address="127.0.0.3")
        await other.send_all(mqtt_connect_bytes())
        assert (await other.receive_some(4))[:1] == b"\x20"
        await trio.aclose_forcefully(other)
