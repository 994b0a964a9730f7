"""CONNECT and authentication (MQTT 3.1.1 §3.1-3.2; docs/protocol.md §3.1, §12 items 4 and 8).

Raw bytes from gateway.testing.mqtt_bytes against a live gateway's dev plain-MQTT port
(demo connector, token authentication)."""

from __future__ import annotations

import msgspec

from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_pingreq,
    gen_pingresp,
    gen_publish,
)


async def test_token_connect_any_client_id(gw, mqtt, device):
    """§12 item 4: any client id is accepted; token as password, user name empty or any."""
    _, token = device
    for client_id, username in [("", ""), ("random-paho-id", "whatever"), ("x" * 200, None)]:
        async with mqtt() as c:
            if username is None:
                await c.send(gen_connect(client_id, username="", password=token))
            else:
                await c.send(gen_connect(client_id, username=username, password=token))
            await c.expect(gen_connack(0))
            await c.send(gen_pingreq())
            await c.expect(gen_pingresp())


async def test_mqtt31_connect_is_tolerated(mqtt, device):
    """MQTT 3.1 (MQIsdp, level 3) is accepted (docs/protocol.md §3.1)."""
    async with mqtt() as c:
        await c.send(
            gen_connect("", username="", password=device[1], proto_name=b"MQIsdp", proto_ver=3)
        )
        await c.expect(gen_connack(0))


async def test_bad_token_gets_connack_4_and_close(mqtt, device, debug_log):
    """§12 item 4: unknown token → CONNACK 4 (murano-client stops retrying), then close."""
    async with mqtt() as c:
        await c.send(gen_connect("", username="", password="0" * 40))
        await c.expect(gen_connack(4))
        assert await c.expect_closed() == b""
    rec = await debug_log.wait_for("connect_refused", "not_authenticated")
    assert rec.ip == "127.0.0.1"


async def test_locked_device_gets_connack_5(gw, mqtt, device, debug_log):
    """§12 item 4: locked identity → CONNACK 5; debug reason ``locked``."""
    await gw.services.devices.update("demo", device[0], locked=True)
    async with mqtt() as c:
        await c.send(gen_connect("", username="", password=device[1]))
        await c.expect(gen_connack(5))
        await c.expect_closed()
    await debug_log.wait_for("connect_refused", "locked")


async def test_anonymous_connect_is_provisioning_only(mqtt, debug_log):
    """§3.2 / §12 item 4: anonymous CONNECT is accepted for provisioning; any other PUBLISH
    closes it (``not_authenticated``)."""
    async with mqtt() as c:
        await c.send(gen_connect("", username=""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$resource/data_in", "x", qos=1, mid=1))
        assert await c.expect_closed() == b""  # no PUBACK
    await debug_log.wait_for("disconnect", "not_authenticated")


async def test_anonymous_refused_when_provisioning_disabled(gw, mqtt, debug_log):
    """§12 item 4: anonymous connection to a connector with provisioning disabled → 5."""
    c0 = gw.services.registry.require("demo")
    settings = msgspec.structs.replace(
        c0.settings, provisioning=msgspec.structs.replace(c0.settings.provisioning, enabled=False)
    )
    await gw.services.connectors.update("demo", settings=settings)
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(5))
        await c.expect_closed()
    await debug_log.wait_for("connect_refused", "provisioning_disabled")


async def test_unsupported_protocol_level_gets_connack_1(mqtt):
    """MQTT-3.1.2-2: level 5 (MQTT 5) → CONNACK 1, then close."""
    async with mqtt() as c:
        await c.send(gen_connect("", proto_ver=5))
        await c.expect(gen_connack(1))
        await c.expect_closed()


async def test_first_packet_must_be_connect(mqtt, debug_log):
    """MQTT-3.1.0-1: anything before CONNECT closes the connection, nothing is sent."""
    async with mqtt() as c:
        await c.send(gen_pingreq())
        assert await c.expect_closed() == b""
    await debug_log.wait_for("disconnect", "protocol_error")


async def test_second_connect_is_a_violation(mqtt, device):
    """MQTT-3.1.0-2: a second CONNECT closes the connection."""
    async with mqtt() as c:
        await c.send(gen_connect("", username="", password=device[1]))
        await c.expect(gen_connack(0))
        await c.send(gen_connect("", username="", password=device[1]))
        assert await c.expect_closed() == b""
