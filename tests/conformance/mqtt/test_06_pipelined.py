"""Packets pipelined behind the CONNECT, in the same write, plain and over TLS (MQTT 3.1.1
§3.1.4: a client may send before it has the CONNACK; docs/decisions.md "MQTT before
CONNACK").  Firmware on slow links writes CONNECT, PUBLISH and DISCONNECT at once.

Every reply must follow the CONNACK; a refused CONNECT answers nothing behind it
(MQTT-3.1.4-5); a value pipelined behind an accepted CONNECT is stored (and, at QoS 1,
acknowledged after its commit) even though the DISCONNECT came in the same write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio

from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_disconnect,
    gen_pingreq,
    gen_pingresp,
    gen_puback,
    gen_publish,
    gen_suback,
    gen_subscribe,
    gen_unsuback,
    gen_unsubscribe,
)
from gateway.testing.server import TestGateway
from gateway.testing.tlsclient import client_context, open_tls_client

from .conftest import RawClient

Opener = Callable[[], AbstractAsyncContextManager[RawClient]]


@pytest.fixture(params=["plain", "tls"])
def client(request: pytest.FixtureRequest, gw: TestGateway) -> Opener:
    """A raw client on the dev plain-MQTT port or the MQTT/TLS port (demo connector)."""

    @asynccontextmanager
    async def open_client() -> AsyncIterator[RawClient]:
        stream: trio.abc.Stream
        if request.param == "plain":
            stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_mqtt"])
        else:
            stream = await open_tls_client(gw.ports["mqtt_tls"], gw.fqdn(), client_context(gw.ca))
        c = RawClient(stream)  # type: ignore[arg-type]
        try:
            yield c
        finally:
            await trio.aclose_forcefully(stream)

    return open_client


@pytest.mark.parametrize("qos", [0, 1])
async def test_connect_publish_disconnect_in_one_write(gw, client, device, qos, eventually):
    """CONNACK 0 (then the PUBACK at QoS 1) before the close, and the value is stored."""
    identity, token = device
    async with client() as c:
        await c.send(
            gen_connect("", username="", password=token)
            + gen_publish("$resource/data_in", f"pipelined-{qos}", qos=qos, mid=5)
            + gen_disconnect()
        )
        got = await c.expect_closed()
    assert got == gen_connack(0) + (gen_puback(5) if qos else b"")

    async def stored() -> bool:
        state = await gw.services.state.get("demo", identity)
        return "data_in" in state and state["data_in"].reported == f"pipelined-{qos}"

    if qos:
        assert await stored()  # PUBACK means committed
    else:
        await eventually(stored)


async def test_replies_behind_connect_follow_the_connack(client, device):
    """PINGREQ, SUBSCRIBE and UNSUBSCRIBE pipelined behind the CONNECT are answered after
    the CONNACK, in order."""
    async with client() as c:
        await c.send(
            gen_connect("", username="", password=device[1])
            + gen_pingreq()
            + gen_subscribe(7, [("$resource/#", 1)])
            + gen_unsubscribe(8, ["$resource/#"])
        )
        await c.expect(gen_connack(0))
        await c.expect(gen_pingresp())
        await c.expect(gen_suback(7, [1]))
        await c.expect(gen_unsuback(8))
        await c.send(gen_pingreq())
        await c.expect(gen_pingresp())


@pytest.mark.parametrize("qos", [0, 1])
async def test_refused_connect_answers_nothing_behind_it(gw, client, device, qos, debug_log):
    """MQTT-3.1.4-5: a refused CONNECT (bad token) gets CONNACK 4 and the close; the
    PINGREQ, SUBSCRIBE and PUBLISH behind it are neither answered nor stored."""
    identity, _token = device
    async with client() as c:
        await c.send(
            gen_connect("", username="", password="not-a-token")
            + gen_pingreq()
            + gen_subscribe(7, [("$resource/#", 1)])
            + gen_publish("$resource/data_in", "must-not-land", qos=qos, mid=5)
            + gen_disconnect()
        )
        assert await c.expect_closed() == gen_connack(4)
    await debug_log.wait_for("connect_refused", "not_authenticated")
    assert "data_in" not in await gw.services.state.get("demo", identity)
