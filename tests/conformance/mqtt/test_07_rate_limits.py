"""The connector's limits over MQTT (docs/decisions.md "Limits"), raw bytes on real sockets
from distinct source addresses (127.0.0.x): authentication back-off per address, flapping
identities, the connection rate per address and per connector, publish throttling, the
value size per resource write.  Each refusal has its debug record with the limit as reason,
its durable event, and its count in ``/metrics``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio

from gateway.services.limits import Limits
from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_disconnect,
    gen_pingreq,
    gen_pingresp,
    gen_puback,
    gen_publish,
)
from gateway.testing.server import TestGateway

from .conftest import RawClient


async def set_limits(gw: TestGateway, **changes: Any) -> None:
    """Change the demo connector's ``limits`` through the connector service."""
    connector = gw.services.registry.require("demo")
    merged = {**msgspec.to_builtins(connector.settings.limits), **changes}
    settings = msgspec.structs.replace(connector.settings, limits=msgspec.convert(merged, Limits))
    await gw.services.connectors.update("demo", settings=settings)


@asynccontextmanager
async def client_from(gw: TestGateway, source: str) -> AsyncIterator[RawClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_mqtt"], local_address=source)
    client = RawClient(stream)
    try:
        yield client
    finally:
        await client.aclose()


async def connack_of(gw: TestGateway, source: str, token: str, client_id: str = "") -> bytes:
    async with client_from(gw, source) as c:
        await c.send(gen_connect(client_id, username="", password=token))
        connack = await c.recv_exactly(4)
        await c.send(gen_disconnect())
        return connack


async def limited(gw: TestGateway, limit: str) -> int:
    """``gateway_limited_total`` of the demo connector for ``limit``, from ``/metrics``."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{gw.ports['api']}/metrics")).text
    line = f'gateway_limited_total{{connector="demo",limit="{limit}"}} '
    for row in text.splitlines():
        if row.startswith(line):
            return int(float(row[len(line) :]))
    return 0


async def refusal_events(gw: TestGateway, reason: str) -> list[Any]:
    """The demo connector's durable events with ``reason`` (the management API)."""
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{gw.api}/connectors/demo/events", params={"limit": 1000}, headers=gw.admin_headers
        )
    return [e for e in r.json()["items"] if e.get("reason") == reason]


async def test_failed_authentications_back_the_address_off(gw, device, debug_log, eventually):
    """Within the failure budget a wrong token gets CONNACK 4; once spent, the address is
    refused CONNACK 3 before any lookup — even with the right token — while another
    address still connects."""
    await set_limits(
        gw, auth_failures_per_ip={"burst": 3, "rate": 0.01, "backoff_s": 60, "max_backoff_s": 600}
    )
    for _ in range(4):  # three within the budget, the fourth starts the back-off
        assert await connack_of(gw, "127.0.0.2", "0" * 40) == gen_connack(4)
    assert await connack_of(gw, "127.0.0.2", device[1]) == gen_connack(3)
    rec = await debug_log.wait_for("connect_refused", "auth_backoff")
    assert rec.ip == "127.0.0.2"
    assert "retry in" in (rec.detail or "")
    assert await connack_of(gw, "127.0.0.4", device[1]) == gen_connack(0)
    assert await limited(gw, "auth_backoff") == 1
    await eventually(lambda: refusal_events(gw, "auth_backoff"))  # a connection_refused event


async def test_a_flapping_identity_is_banned(gw, device, debug_log):
    """More than ``max_connects`` connects of one identity in the window: CONNACK 3 from
    any address until the ban ends; other devices are not concerned."""
    await set_limits(gw, flapping={"max_connects": 3, "window_s": 60, "ban_s": 600})
    for _ in range(3):
        assert await connack_of(gw, "127.0.0.2", device[1]) == gen_connack(0)
    assert await connack_of(gw, "127.0.0.2", device[1]) == gen_connack(3)
    assert await connack_of(gw, "127.0.0.5", device[1]) == gen_connack(3)  # the identity
    await debug_log.wait_for("connect_refused", "flapping")
    await gw.services.devices.add("demo", "dev-2", auth_type="token", key="b" * 40)
    assert await connack_of(gw, "127.0.0.2", "b" * 40) == gen_connack(0)
    assert await limited(gw, "flapping") == 2


async def test_connection_rate_per_address_and_per_connector(gw, device, debug_log, eventually):
    """Over the address's rate the connection is closed before a byte is read
    (``connection_rate``); over the connector's, from any address
    (``connector_connection_rate``)."""
    await set_limits(
        gw,
        connections_per_ip={"rate": 0.001, "burst": 2},
        connections={"rate": 0.001, "burst": 4},
    )
    assert await connack_of(gw, "127.0.0.2", device[1]) == gen_connack(0)
    assert await connack_of(gw, "127.0.0.2", device[1]) == gen_connack(0)
    async with client_from(gw, "127.0.0.2") as c:
        await c.send(gen_connect("", username="", password=device[1]))
        assert await c.expect_closed() == b""
    rec = await debug_log.wait_for("connection_refused", "connection_rate")
    assert rec.ip == "127.0.0.2"
    assert await connack_of(gw, "127.0.0.6", device[1]) == gen_connack(0)
    assert await connack_of(gw, "127.0.0.7", device[1]) == gen_connack(0)
    async with client_from(gw, "127.0.0.8") as c:  # the connector's fifth: over its burst
        await c.send(gen_connect("", username="", password=device[1]))
        assert await c.expect_closed() == b""
    await debug_log.wait_for("connection_refused", "connector_connection_rate")
    assert await limited(gw, "connection_rate") == 1
    assert await limited(gw, "connector_connection_rate") == 1
    await eventually(lambda: refusal_events(gw, "connection_rate"))


async def test_publishes_over_the_rate_are_throttled_not_refused(gw, device, debug_log):
    """A read that overdraws the device's budget is handled (every PUBACK comes), then the
    reader waits out the debt: the PINGREQ sent right behind waits about that long, the
    connection stays open, and another device is not slowed."""
    await set_limits(gw, publishes={"rate": 20, "burst": 20})
    await gw.services.devices.add("demo", "dev-2", auth_type="token", key="b" * 40)
    async with client_from(gw, "127.0.0.2") as c, client_from(gw, "127.0.0.3") as other:
        await c.send(gen_connect("", username="", password=device[1]))
        await c.expect(gen_connack(0))
        await other.send(gen_connect("", username="", password="b" * 40))
        await other.expect(gen_connack(0))
        burst = b"".join(
            gen_publish("$resource/data_in", str(i), qos=1, mid=i + 1) for i in range(60)
        )
        start = trio.current_time()
        await c.send(burst)
        await c.expect(b"".join(gen_puback(i + 1) for i in range(60)))
        await c.send(gen_pingreq())  # read only after the debt of 40 publishes: 2 s
        await other.send(gen_pingreq())
        await other.expect(gen_pingresp())  # the other device answers at once
        other_done = trio.current_time() - start
        await c.expect(gen_pingresp())
        throttled = trio.current_time() - start
        assert throttled >= 1.5
        assert other_done < throttled
        await c.send(gen_publish("$resource/data_in", "after", qos=1, mid=99))
        await c.expect(gen_puback(99))  # still open, still served
    rec = await debug_log.wait_for("throttled", "publish_rate")
    assert rec.identity == device[0]
    assert (await gw.services.state.get("demo", device[0]))["data_in"].reported == "after"
    assert await limited(gw, "publish_rate") >= 1


async def test_a_value_above_max_payload_is_dropped_and_acknowledged(gw, device, debug_log):
    """``limits.max_payload`` per resource write: the value is dropped and logged
    (``too_large``), the PUBLISH still acknowledged (like a format mismatch)."""
    await set_limits(gw, max_payload=100)
    async with client_from(gw, "127.0.0.2") as c:
        await c.send(gen_connect("", username="", password=device[1]))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$resource/data_in", "small", qos=1, mid=1))
        await c.expect(gen_puback(1))
        await c.send(gen_publish("$resource/data_in", "x" * 101, qos=1, mid=2))
        await c.expect(gen_puback(2))
        batch = '[{"timestamp": 1, "values": {"data_in": "%s"}}]' % ("y" * 101)
        await c.send(gen_publish("$resource.batch", batch, qos=1, mid=3))
        await c.expect(gen_puback(3))
    first = await debug_log.wait_for("write_rejected", "too_large")
    assert first.detail is not None
    assert first.detail.startswith("$resource/data_in:")
    with trio.fail_after(5):  # the batch's value is over the limit too
        while not any(
            r.reason == "too_large" and (r.detail or "").startswith("$resource.batch:")
            for r in debug_log.seen
        ):
            debug_log.seen.append(await debug_log.sub.receive.receive())
    assert (await gw.services.state.get("demo", device[0]))["data_in"].reported == "small"
