"""Device PUBLISH: resource writes, batches, custom topics (MQTT 3.1.1 §3.3-3.4;
docs/protocol.md §3.3, §4.2, §12 items 13, 14, 20, 25).  PUBACK means committed
(docs/architecture.md principle 2)."""

from __future__ import annotations

import json

from gateway.services.connectors import Resource
from gateway.testing.mqtt_bytes import gen_connack, gen_connect, gen_puback, gen_publish


async def _login(c, token):
    await c.send(gen_connect("", username="", password=token))
    await c.expect(gen_connack(0))


async def _events(gw, kind):
    events = await gw.services.events.read("demo", limit=1000)
    return [(e.identity, e.payload, e.protocol) for e in events if e.type == kind]


async def test_qos1_write_is_committed_when_puback_arrives(gw, mqtt, device):
    """§3.3: ``$resource/<alias>`` writes now; the state is readable once PUBACK is seen."""
    identity, token = device
    async with mqtt() as c:
        await _login(c, token)
        await c.send(gen_publish("$resource/data_in", '{"001": 21.5}', qos=1, mid=10))
        await c.expect(gen_puback(10))
        state = await gw.services.state.get("demo", identity)
        assert state["data_in"].reported == '{"001": 21.5}'
        (ev,) = await _events(gw, "data_in")
        assert ev[0] == identity
        assert ev[2] == "murano:v1/mqtt"
        assert ev[1][0]["values"] == {"data_in": '{"001": 21.5}'}


async def test_pubacks_of_one_burst_in_order(gw, mqtt, device):
    """MQTT-4.6.0-2: PUBACKs in the order the PUBLISHes arrived; every publish is in the
    event log (the publishes of one read share a data_in event, one payload entry each)."""
    async with mqtt() as c:
        await _login(c, device[1])
        burst = b"".join(
            gen_publish("$resource/data_in", str(i), qos=1, mid=i + 1) for i in range(500)
        )
        await c.send(burst)
        await c.expect(b"".join(gen_puback(i + 1) for i in range(500)))
    assert (await gw.services.state.get("demo", device[0]))["data_in"].reported == "499"
    entries = [e for ev in await _events(gw, "data_in") for e in ev[1]]
    assert [e["values"]["data_in"] for e in entries] == [str(i) for i in range(500)]


async def test_qos0_write_is_stored(gw, mqtt, device, eventually):
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("$resource/data_in", "q0"))

        async def written() -> bool:
            return "data_in" in await gw.services.state.get("demo", device[0])

        await eventually(written)
    assert (await gw.services.state.get("demo", device[0]))["data_in"].reported == "q0"


async def test_batch_with_device_timestamps(gw, mqtt, device):
    """§3.3: ``$resource.batch`` timestamps in µs (s and ms tolerated, §10 item 9)."""
    batch = [
        {"timestamp": 1700000000123456, "values": {"data_in": "a"}},
        {"timestamp": 1700000001, "values": {"data_in": "b", "uptime": 5}},
    ]
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("$resource.batch", json.dumps(batch), qos=1, mid=3))
        await c.expect(gen_puback(3))
        # a resent batch is a replay: acknowledged, not stored twice (§12 item 14)
        await c.send(gen_publish("$resource.batch", json.dumps(batch), qos=1, mid=4))
        await c.expect(gen_puback(4))
    st = (await gw.services.state.get("demo", device[0]))["data_in"]
    assert (st.reported, st.reported_timestamp) == ("b", 1700000001000000)
    (ev,) = await _events(gw, "data_in")
    assert [e["timestamp"] for e in ev[1]] == [1700000000123456, 1700000001000000]


async def test_invalid_value_is_dropped_but_acknowledged(gw, mqtt, device, debug_log):
    """§12 item 13: a value failing its format is logged and dropped, still PUBACKed."""
    await gw.services.connectors.put_resource(
        "demo", Resource(alias="temp", format="number"), create=True
    )
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("$resource/temp", "warm", qos=1, mid=1))
        await c.expect(gen_puback(1))
        await c.send(gen_publish("$resource/temp", "21.5", qos=1, mid=2))
        await c.expect(gen_puback(2))
    assert (await gw.services.state.get("demo", device[0]))["temp"].reported == "21.5"
    rec = await debug_log.wait_for("write_rejected", "format_mismatch")
    assert "temp" in (rec.detail or "")


async def test_bad_batch_is_logged_and_acknowledged(gw, mqtt, device, debug_log):
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("$resource.batch", "not json", qos=1, mid=5))
        await c.expect(gen_puback(5))
    await debug_log.wait_for("write_rejected", "bad_request")
    assert await _events(gw, "data_in") == []


async def test_undefined_alias_goes_to_the_event_log_only(gw, mqtt, device):
    """§4.2: no resource for the alias → event only, nothing stored in state."""
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("$resource/uptime", "42", qos=1, mid=1))
        await c.expect(gen_puback(1))
    assert "uptime" not in await gw.services.state.get("demo", device[0])
    assert (await _events(gw, "data_in"))[0][1][0]["values"] == {"uptime": "42"}


async def test_custom_topic_becomes_publish_event(gw, mqtt, device):
    """§12 item 20: any other topic → ``publish`` event with ``[{topic, payload}]``."""
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("site/alarm", "on", qos=1, mid=1))
        await c.expect(gen_puback(1))
    assert await _events(gw, "publish") == [
        (device[0], [{"topic": "site/alarm", "payload": "on"}], "murano:v1/mqtt")
    ]


async def test_retain_flag_is_ignored(gw, mqtt, device):
    """§12 item 25: RETAIN on a device publish is a normal write, nothing is retained."""
    async with mqtt() as c:
        await _login(c, device[1])
        await c.send(gen_publish("$resource/data_in", "r", qos=1, mid=1, retain=True))
        await c.expect(gen_puback(1))
    assert (await gw.services.state.get("demo", device[0]))["data_in"].reported == "r"
