"""Limits and bad input: each bad packet ends only its own connection, nothing partial is
stored (MQTT 3.1.1 §2.2, §4.8; docs/protocol.md §3.1, §10 item 10; docs/architecture.md
principle 6)."""

from __future__ import annotations

from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_pingreq,
    gen_pingresp,
    gen_puback,
    gen_publish,
    pack_remaining_length,
)


async def _login(c, token):
    await c.send(gen_connect("", username="", password=token))
    await c.expect(gen_connack(0))


async def test_oversized_packet_refused_from_its_header(gw, mqtt, device, debug_log):
    """The connector's ``limits.max_packet_size`` is checked on the fixed header: the body
    is never waited for, the connection closes at once."""
    limit = gw.services.registry.require("demo").settings.limits.max_packet_size
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(b"\x30" + pack_remaining_length(limit))  # one byte over, header only
        assert await c.expect_closed() == b""
    await debug_log.wait_for("disconnect", "packet_too_large")


async def test_qos2_publish_is_refused(mqtt, device, debug_log):
    """§10 item 10: QoS 2 is not supported: close, debug log, nothing stored."""
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("$resource/data_in", "x", qos=2, mid=1))
        assert await c.expect_closed() == b""
    await debug_log.wait_for("disconnect", "qos2_not_supported")


async def test_violation_after_good_packets_acks_only_those(gw, mqtt, device, debug_log):
    """Packets before a violation in the same read are applied and acknowledged; the bad
    one and everything after it are not."""
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(
            gen_publish("$resource/data_in", "good", qos=1, mid=1)
            + b"\x00\x00"
            + gen_publish("$resource/data_in", "after", qos=1, mid=2)
        )
        assert await c.expect_closed() == gen_puback(1)
    assert (await gw.services.state.get("demo", device[0]))["data_in"].reported == "good"
    await debug_log.wait_for("disconnect", "malformed_packet")


async def test_bad_packet_ends_only_its_own_connection(mqtt, device):
    async with mqtt() as good:
        await _login(good, device[1])
        for garbage in [b"\xff\xff\xff\xff\xff", b"\x30\xff\xff\xff\xff\x7f", b"\x62\x02\x00\x01"]:
            async with mqtt() as bad:
                await bad.send(gen_connect("x"))
                await bad.expect(gen_connack(0))  # anonymous: provisioning-only
                await bad.send(garbage)
                await bad.expect_closed()
            await good.send(gen_pingreq())
            await good.expect(gen_pingresp())
