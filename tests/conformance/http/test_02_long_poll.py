"""Long-polling (docs/protocol.md §2.6, §4.3, §12 items 15-17, §13 items 4-5)."""

from __future__ import annotations

import email.utils

import trio

from gateway.testing.server import TestGateway

from .conftest import FORM, Client, activate, cik

ALIAS = "/onep:v1/stack/alias"
POLL = f"{ALIAS}?config_io&data_out&config_applications"


def _poll_headers(token: str, timeout_ms: int, since: str | None = "0") -> list[tuple[str, str]]:
    h = [*cik(token), ("Request-Timeout", str(timeout_ms))]
    if since is not None:
        h.append(("If-Modified-Since", since))
    return h


async def test_pending_value_answers_at_once_with_one_alias(gw: TestGateway) -> None:
    """ExoEdge's poll: three aliases, huge timeout, IMS 0 → exactly one alias, the oldest
    pending, with an HTTP-date Last-Modified."""
    c = await Client.dev(gw)
    token = await activate(c, "p-1")
    await gw.services.state.set_values("demo", "p-1", {"data_out": "first"})
    await gw.services.state.set_values("demo", "p-1", {"config_io": "second"})
    r = await c.request("GET", POLL, headers=_poll_headers(token, 300_000_000))
    assert r.status == 200
    assert r.body == b"data_out=first"
    parsed = email.utils.parsedate_to_datetime(r.headers["last-modified"])
    assert parsed.tzinfo is not None
    # the ack (any write) clears it; the next poll gets the other one
    await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"data_out=first")
    r = await c.request("GET", POLL, headers=_poll_headers(token, 1000))
    assert r.status == 200
    assert r.body == b"config_io=second"


async def test_wakes_on_set_and_times_out_with_304(gw: TestGateway) -> None:
    c = await Client.dev(gw)
    token = await activate(c, "p-2")
    with trio.fail_after(5):
        r = await c.request("GET", POLL, headers=_poll_headers(token, 300))
    assert r.status == 304
    assert r.body == b""

    async def later() -> None:
        await gw.long_poll_waiting("p-2", "demo")
        await gw.services.state.set_values("demo", "p-2", {"config_io": '{"c": 1}'})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        start = trio.current_time()
        r = await c.request("GET", POLL, headers=_poll_headers(token, 30_000))
        assert trio.current_time() - start < 5
    assert r.status == 200
    assert r.body == b"config_io=%7b%22c%22%3a+1%7d"


async def test_acknowledged_value_is_not_returned_again(gw: TestGateway) -> None:
    """§13 item 5: IMS is always 0, so pending state decides."""
    c = await Client.dev(gw)
    token = await activate(c, "p-3")
    await gw.services.state.set_values("demo", "p-3", {"config_io": "v"})
    await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"config_io=v")
    r = await c.request("GET", POLL, headers=_poll_headers(token, 200))
    assert r.status == 304


async def test_if_modified_since_filters_older_pending(gw: TestGateway) -> None:
    """§12 item 17: only pending values set after If-Modified-Since (unix s or HTTP-date)."""
    c = await Client.dev(gw)
    token = await activate(c, "p-4")
    await gw.services.state.set_values("demo", "p-4", {"config_io": "v"})
    future = "4000000000"  # year 2096
    r = await c.request("GET", POLL, headers=_poll_headers(token, 200, since=future))
    assert r.status == 304
    r = await c.request(
        "GET", POLL, headers=_poll_headers(token, 200, since="Thu, 01 Jan 1970 00:00:10 GMT")
    )
    assert r.status == 200
    assert r.body == b"config_io=v"


async def test_undefined_aliases_404_at_once(gw: TestGateway) -> None:
    c = await Client.dev(gw)
    token = await activate(c, "p-5")
    with trio.fail_after(3):
        r = await c.request("GET", f"{ALIAS}?nope&other", headers=_poll_headers(token, 60_000))
    assert r.status == 404
    # one defined alias among undefined ones is a normal poll
    r = await c.request("GET", f"{ALIAS}?nope&data_out", headers=_poll_headers(token, 100))
    assert r.status == 304


async def test_gone_pollers_are_dropped(gw: TestGateway) -> None:
    """Hundreds of concurrent polls of one device share its single change event, and a
    poll whose connection closed stops waiting at once (not after its 300 s timeout)."""
    token = await activate(await Client.dev(gw), "p-6")
    streams = []
    for _ in range(200):
        s = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_http"])
        await s.send_all(
            f"GET {POLL} HTTP/1.1\r\nHost: {gw.devmode_fqdn()}\r\nX-Exosite-CIK: {token}\r\n"
            "Request-Timeout: 300000\r\n\r\n".encode()
        )
        streams.append(s)
    key = ("demo", "p-6")
    with trio.fail_after(10):
        while _pollers(gw, key) < 200:  # noqa: ASYNC110 (observing waiters: no event)
            await trio.sleep(0.02)
    assert list(gw.services.control._waiters) == [key]  # one shared event
    for s in streams:
        await s.aclose()
    with trio.fail_after(5):
        while _pollers(gw, key) > 0:  # noqa: ASYNC110 (observing waiters: no event)
            await trio.sleep(0.02)


def _pollers(gw: TestGateway, device: tuple[str, str]) -> int:
    """Long-polls of the device (connector, identity) still waiting (each waits on the
    device's change event)."""
    return gw.services.control.change_event(device).statistics().tasks_waiting
