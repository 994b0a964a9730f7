"""Cloud → device control: pushes, acknowledgement, subscriptions, takeover, connection
events (docs/protocol.md §3.4, §4.3, §12 items 5, 6, 9, 20; §13 items 5, 6, 13)."""

from __future__ import annotations

from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_disconnect,
    gen_puback,
    gen_publish,
    gen_suback,
    gen_subscribe,
    gen_unsuback,
    gen_unsubscribe,
)


async def _login(c, token):
    await c.send(gen_connect("", username="", password=token))
    await c.expect(gen_connack(0))


async def _push(gw, identity, alias):
    st = (await gw.services.state.get("demo", identity))[alias]
    return gen_publish(f"$resource/{alias}/{st.set_timestamp}", st.set)


def _online(gw, identity):
    async def check():
        return (await gw.services.devices.get("demo", identity)).online

    return check


async def _events(gw, identity=None, kind=None):
    return [
        e
        for e in await gw.services.events.read("demo", limit=1000)
        if (identity is None or e.identity == identity) and (kind is None or e.type == kind)
    ]


async def test_pending_value_pushed_on_connect_without_subscribe(gw, mqtt, device):
    """§13 item 13: pending values are pushed on every connect, QoS 0, no SUBSCRIBE."""
    identity, token = device
    await gw.services.state.set_values("demo", identity, {"config_io": '{"channels": {}}'})
    for _ in range(2):  # still pending: pushed again on the next connect (§13 item 14)
        async with mqtt() as c:
            await _login(c, token)
            await c.expect(await _push(gw, identity, "config_io"))


async def test_set_while_connected_is_pushed_at_once(gw, mqtt, device):
    identity, token = device
    async with mqtt() as c:
        await _login(c, token)
        await gw.services.state.set_values("demo", identity, {"data_out": "reboot"})
        await c.expect(await _push(gw, identity, "data_out"))


async def test_any_write_acknowledges(gw, mqtt, device):
    """§13 item 6: any write of the alias clears pending; nothing is pushed afterwards."""
    identity, token = device
    await gw.services.state.set_values("demo", identity, {"config_io": '{"a": 1}'})
    async with mqtt() as c:
        await _login(c, token)
        await c.expect(await _push(gw, identity, "config_io"))
        await c.send(gen_publish("$resource/config_io", '{"a": 1, "b": 2}', qos=1, mid=1))
        await c.expect(gen_puback(1))
    assert not (await gw.services.state.get("demo", identity))["config_io"].pending
    async with mqtt() as c:
        await _login(c, token)
        await c.send(gen_subscribe(1, [("$resource/#", 0)]))
        await c.expect(gen_suback(1, [0]))  # nothing pending arrives before the SUBACK


async def test_subscribe_resends_pending(gw, mqtt, device):
    """§12 item 6: SUBACK with min(QoS, 1), then the pending values again."""
    identity, token = device
    await gw.services.state.set_values("demo", identity, {"data_out": "x"})
    async with mqtt() as c:
        await _login(c, token)
        push = await _push(gw, identity, "data_out")
        await c.expect(push)
        await c.send(gen_subscribe(7, [("$resource/data_out/+", 2)]))
        await c.expect(gen_suback(7, [1]) + push)
        await c.send(gen_unsubscribe(8, ["$resource/data_out/+"]))
        await c.expect(gen_unsuback(8))


async def test_second_connection_replaces_the_first(gw, mqtt, device, debug_log, eventually):
    """§12 item 9: newest wins, the older connection is closed (``duplicate_connection``);
    the device stays online and pushes go to the new connection."""
    identity, token = device
    async with mqtt() as first, mqtt() as second:
        await _login(first, token)
        await _login(second, token)
        assert await first.expect_closed() == b""
        await debug_log.wait_for("disconnect", "duplicate_connection")
        await gw.services.state.set_values("demo", identity, {"data_out": "to-second"})
        await second.expect(await _push(gw, identity, "data_out"))
        await eventually(_online(gw, identity))


async def test_connect_and_disconnect_events(gw, mqtt, device, eventually):
    """§12 item 20: ``connect`` and ``disconnect`` (with a reason) in the event log."""
    identity, token = device
    async with mqtt() as c:
        await _login(c, token)
        await eventually(_online(gw, identity))
        await c.send(gen_disconnect())
        await c.expect_closed()

    async def rows():
        return [(e.type, e.reason) for e in await _events(gw, identity)]

    async def both():
        return len(await rows()) >= 2

    await eventually(both)
    assert await rows() == [("connect", None), ("disconnect", "client_disconnect")]
    assert not (await gw.services.devices.get("demo", identity)).online


async def test_will_is_published_on_an_unclean_end_only(gw, mqtt, device, eventually):
    """A will is delivered at QoS 0 (docs/protocol.md §3.1) — here as a ``publish`` event."""
    token = device[1]
    async with mqtt() as c:
        await c.send(
            gen_connect("", username="", password=token, will_topic="status", will_payload=b"lost")
        )
        await c.expect(gen_connack(0))
    async with mqtt() as c:
        await c.send(
            gen_connect("", username="", password=token, will_topic="status", will_payload=b"clean")
        )
        await c.expect(gen_connack(0))
        await c.send(gen_disconnect())
        await c.expect_closed()

    async def wills():
        return [e.payload for e in await _events(gw, kind="publish")]

    await eventually(wills)
    # the clean connection's end ran before its stream closed; a write submitted now
    # commits after anything it submitted (one writer, in order)
    await gw.services.store.write([])
    assert await wills() == [[{"topic": "status", "payload": "lost"}]]
