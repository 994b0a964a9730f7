"""Provisioning over MQTT (docs/protocol.md §3.2, §3.6, §12 items 1-3, §13 item 12)."""

from __future__ import annotations

import re

import msgspec

from gateway.services.connectors import Resource
from gateway.testing.mqtt_bytes import gen_connack, gen_connect, gen_puback, gen_publish


async def _set_provisioning(gw, **changes):
    c = gw.services.registry.require("demo")
    prov = msgspec.structs.replace(c.settings.provisioning, **changes)
    await gw.services.connectors.update(
        "demo", settings=msgspec.structs.replace(c.settings, provisioning=prov)
    )


async def test_token_provisioning_then_the_same_connection_writes(gw, mqtt):
    """§3.6: PUBACK, then the 40-hex token on ``$provision/<id>`` (QoS 0, no retain); the
    connection is then bound to the identity (§12 item 2) and the token authenticates."""
    async with mqtt() as c:
        await c.send(gen_connect("", username=""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$provision/00AB01FF", b"", qos=1, mid=1))
        await c.expect(gen_puback(1))
        reply = await c.recv_packet()
        topic = b"\x00\x13$provision/00AB01FF"
        assert reply[0] == 0x30  # PUBLISH, QoS 0, no DUP, no RETAIN
        assert reply[2 : 2 + len(topic)] == topic
        token = reply[2 + len(topic) :].decode()
        assert re.fullmatch("[0-9a-f]{40}", token)
        assert reply == gen_publish("$provision/00AB01FF", token)
        await c.send(gen_publish("$resource/data_in", "first", qos=1, mid=2))
        await c.expect(gen_puback(2))
    assert (await gw.services.state.get("demo", "00AB01FF"))["data_in"].reported == "first"
    async with mqtt() as c:
        await c.send(gen_connect("", username="", password=token))
        await c.expect(gen_connack(0))


async def test_qos0_provisioning_gets_only_the_reply(mqtt):
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$provision/dev-q0", b""))
        reply = await c.recv_packet()
        assert reply.startswith(b"\x30")
        assert len(reply) == 2 + 2 + len("$provision/dev-q0") + 40


async def test_reply_comes_before_pending_pushes(gw, mqtt):
    """murano-client takes the first message on any topic as its token (§13 item 12): the
    ``initial`` value pushed on binding must come after the reply."""
    await gw.services.connectors.put_resource(
        "demo", Resource(alias="mode", format="string", settable=True, initial="eco"), create=True
    )
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$provision/dev-init", b"", qos=1, mid=9))
        await c.expect(gen_puback(9))
        reply = await c.recv_packet()
        assert b"$provision/dev-init" in reply
        push = await c.recv_packet()
        assert b"$resource/mode/" in push
        assert push.endswith(b"eco")


async def test_already_provisioned_gets_nothing_and_close(mqtt, device, debug_log):
    """§12 item 3: failure → send nothing (not even the PUBACK), close, log the reason."""
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish(f"$provision/{device[0]}", b"", qos=1, mid=1))
        assert await c.expect_closed() == b""
    await debug_log.wait_for("disconnect", "already_provisioned")


async def test_presenter_identity_disabled(gw, mqtt, debug_log):
    await _set_provisioning(gw, presenter_identity=False)
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$provision/stranger", b"", qos=1, mid=1))
        assert await c.expect_closed() == b""
    await debug_log.wait_for("disconnect", "presenter_identity_disabled")
    # a whitelisted identity still provisions
    await gw.services.devices.add("demo", "known")
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$provision/known", b"", qos=1, mid=2))
        await c.expect(gen_puback(2))


async def test_password_provisioning(gw, mqtt):
    """§3.2 variant: the payload is the device-chosen password; the reply is empty; the
    device then connects with user name = identity."""
    await _set_provisioning(gw, auth_type="password")
    password = "correct-horse-battery-staple"
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$provision/pw-dev", password, qos=1, mid=1))
        await c.expect(gen_puback(1))
        await c.expect(gen_publish("$provision/pw-dev", b""))
    async with mqtt() as c:
        await c.send(gen_connect("", username="pw-dev", password=password))
        await c.expect(gen_connack(0))
    async with mqtt() as c:
        await c.send(gen_connect("", username="pw-dev", password="wrong-password-wrong"))
        await c.expect(gen_connack(4))


async def test_identity_outside_the_format(gw, mqtt, debug_log):
    c0 = gw.services.registry.require("demo")
    fmt = msgspec.structs.replace(c0.settings.identity_format, type="base10")
    await gw.services.connectors.update(
        "demo", settings=msgspec.structs.replace(c0.settings, identity_format=fmt)
    )
    async with mqtt() as c:
        await c.send(gen_connect(""))
        await c.expect(gen_connack(0))
        await c.send(gen_publish("$provision/not-a-number", b"", qos=1, mid=1))
        assert await c.expect_closed() == b""
    await debug_log.wait_for("disconnect", "format_mismatch")
