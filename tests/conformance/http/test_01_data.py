"""Write, read, hybrid and record on ``/onep:v1/stack/*`` (docs/protocol.md §2.3-§2.5, §2.7,
§12 items 13, 14, 23; §13 items 2, 3, 6-11), against a real gateway on the dev port."""

from __future__ import annotations

import time
from typing import Any

from gateway.testing.server import TestGateway

from .conftest import FORM, Client, activate, cik

ALIAS = "/onep:v1/stack/alias"
RECORD = "/onep:v1/stack/record"


async def _events(gw: TestGateway, kind: str = "data_in") -> list[Any]:
    return [e for e in await gw.services.events.read("demo", limit=1000) if e.type == kind]


async def test_write_stores_all_aliases_with_one_timestamp_and_one_event(gw: TestGateway) -> None:
    """§2.3: 204, one server timestamp for every alias, undefined aliases only in the event."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-1")
    body = b"data_in=%7B%22001%22%3A21.5%7D&uptime=3600"
    r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=body)
    assert r.status == 204
    assert r.body == b""
    assert "content-length" not in r.headers
    assert r.headers["server"] == "gateway"
    assert "date" in r.headers
    state = await gw.services.state.get("demo", "dev-1")
    assert state["data_in"].reported == '{"001":21.5}'
    assert "uptime" not in state  # undefined: event only
    (event,) = await _events(gw)
    assert event.identity == "dev-1"
    assert event.protocol == "onep:v1/http"
    (entry,) = event.payload
    assert entry["values"] == {"data_in": '{"001":21.5}', "uptime": "3600"}


async def test_read_returns_lowercase_escapes_and_plus(gw: TestGateway) -> None:
    """§2.4 (the Murano documentation's test vector): ``{ "press": 2, "temp": 1 }`` reads back as
    ``%7b+%22press%22%3a+2%2c+%22temp%22%3a+1+%7d``."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-2")
    body = b"data_in=%7B+%22press%22%3A+2%2C+%22temp%22%3A+1+%7D"
    assert (await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=body)).status == 204
    r = await c.request("GET", f"{ALIAS}?data_in&uptime&config_io", headers=cik(token))
    assert r.status == 200
    assert r.headers["content-type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert r.body == b"data_in=%7b+%22press%22%3a+2%2c+%22temp%22%3a+1+%7d"


async def test_read_of_nothing_or_undefined_is_204(gw: TestGateway) -> None:
    """§12 item 15 / §13 item 2: a plain read of undefined aliases is 204, never 404."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-3")
    for target in (f"{ALIAS}?config_applications", f"{ALIAS}?data_in", f"{ALIAS}?nope&data_out"):
        r = await c.request("GET", target, headers=cik(token))
        assert r.status == 204, (target, r)


async def test_read_of_settable_returns_set_value(gw: TestGateway) -> None:
    """§13 item 3: a settable alias reads back its *set* value (pending or not)."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-4")
    await gw.services.state.set_values("demo", "dev-4", {"config_io": '{"v": 1}'})
    r = await c.request("GET", f"{ALIAS}?config_io", headers=cik(token))
    assert r.status == 200
    assert r.body == b"config_io=%7b%22v%22%3a+1%7d"


async def test_raw_json_body_is_accepted_and_acks_pending(gw: TestGateway) -> None:
    """§2.1, §12 item 23, §13 items 6-7: murano-client's ack sends raw JSON; any write to a
    pending alias acknowledges it; an invalid ``%`` stays literal."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-5")
    await gw.services.state.set_values("demo", "dev-5", {"config_io": '{"a": 1}'})
    assert (await gw.services.state.get("demo", "dev-5"))["config_io"].pending
    raw = b'config_io={"a": 1, "last_edited": "100%", "x": "a&b=c"}'
    r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=raw)
    assert r.status == 204
    st = (await gw.services.state.get("demo", "dev-5"))["config_io"]
    assert st.reported == '{"a": 1, "last_edited": "100%", "x": "a&b=c"}'
    assert st.set == st.reported
    assert not st.pending


async def test_hybrid_write_then_read(gw: TestGateway) -> None:
    """§2.5: the writes happen before the read; the answer is the read's."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-6")
    r = await c.request(
        "POST", f"{ALIAS}?data_in&data_out", headers=[*cik(token), FORM], body=b"data_in=42"
    )
    assert r.status == 200
    assert r.body == b"data_in=42"
    r = await c.request(
        "POST", f"{ALIAS}?data_out", headers=[*cik(token), FORM], body=b"data_in=43"
    )
    assert r.status == 204
    assert (await gw.services.state.get("demo", "dev-6"))["data_in"].reported == "43"


async def test_invalid_value_is_400_and_stores_nothing(gw: TestGateway) -> None:
    """§12 item 13: a value failing format/allowed refuses the whole request."""
    from gateway.services.connectors import Resource

    await gw.services.connectors.put_resource(
        "demo", Resource(alias="temp", format="number"), create=True
    )
    c = await Client.dev(gw)
    token = await activate(c, "dev-7")
    r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"data_in=ok&temp=hot")
    assert r.status == 400
    assert await gw.services.state.get("demo", "dev-7") == {}
    assert await _events(gw) == []
    r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"temp=21.5")
    assert r.status == 204
    assert (await gw.services.state.get("demo", "dev-7"))["temp"].reported == "21.5"


async def test_record_stores_points_at_device_times(gw: TestGateway) -> None:
    """§2.7, §13 items 8-10: integer and fractional seconds, several aliases, state takes
    the newest point, the event has one entry per timestamp."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-8")
    now = int(time.time())
    body = (
        f"alias=data_in&{now - 10}=%7B%22001%22%3A1%7D&{now - 5}.1234567=%7B%22001%22%3A2%7D"
        f"&alias=config_io&{now - 7}=cfg"
    ).encode()
    r = await c.request("POST", RECORD, headers=[*cik(token), FORM], body=body)
    assert r.status == 204
    st = await gw.services.state.get("demo", "dev-8")
    assert st["data_in"].reported == '{"001":2}'
    assert st["data_in"].reported_timestamp == (now - 5) * 1_000_000 + 123456
    assert st["config_io"].reported == "cfg"
    (event,) = await _events(gw)
    stamps = sorted(entry["timestamp"] for entry in event.payload)
    assert stamps == [(now - 10) * 1_000_000, (now - 7) * 1_000_000, (now - 5) * 1_000_000 + 123456]


async def test_record_same_second_accepted_and_replay_stored_once(gw: TestGateway) -> None:
    """§12 item 14, §13 item 11: never 409; same-second points are all kept; an exact
    replay is acknowledged and not stored twice."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-9")
    now = int(time.time())
    body = f"alias=data_in&{now}=a&{now}=b".encode()
    for _ in range(2):
        r = await c.request("POST", RECORD, headers=[*cik(token), FORM], body=body)
        assert r.status == 204
    events = await _events(gw)
    assert len(events) == 1  # the replay produced nothing new
    values = [entry["values"]["data_in"] for entry in events[0].payload]
    assert sorted(values) == ["a", "b"]


async def test_record_future_and_malformed_are_400(gw: TestGateway) -> None:
    """§13 item 10: up to ~0.5 s ahead is fine, further ahead is refused; so are keys
    that are not seconds and points before any ``alias=``; nothing is stored."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-10")
    ahead = time.time() + 0.2
    r = await c.request(
        "POST", RECORD, headers=[*cik(token), FORM], body=f"alias=data_in&{ahead:.6f}=x".encode()
    )
    assert r.status == 204
    for body in (
        f"alias=data_in&{int(time.time()) + 60}=x",
        "alias=data_in&yesterday=x",
        "1700000000=x",
        "alias=data_in&-5=x",
    ):
        r = await c.request("POST", RECORD, headers=[*cik(token), FORM], body=body.encode())
        assert r.status == 400, (body, r)
    assert len(await _events(gw)) == 1


async def test_legacy_record_path(gw: TestGateway) -> None:
    """One Platform's ``POST /onep:v1/stack/alias/<alias>`` with ``<ts>=<v>`` pairs."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-11")
    r = await c.request(
        "POST", f"{ALIAS}/data_in", headers=[*cik(token), FORM], body=b"1700000000=old"
    )
    assert r.status == 204
    assert (await gw.services.state.get("demo", "dev-11"))["data_in"].reported == "old"


async def test_keep_alive_many_requests_one_connection(gw: TestGateway) -> None:
    """Every write on one keep-alive connection is answered and stored in order."""
    c = await Client.dev(gw)
    token = await activate(c, "dev-12")
    for i in range(50):
        r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"data_in=%d" % i)
        assert r.status == 204
    assert (await gw.services.state.get("demo", "dev-12"))["data_in"].reported == "49"
    assert len(await _events(gw)) == 50
