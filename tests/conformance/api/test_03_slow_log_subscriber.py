"""A live-log subscriber that stops reading is dropped while the gateway keeps serving the
others, and devices are not slowed by it (docs/protocol.md §9,
``gateway.services.logs``).

Setup: two SSE subscribers on the demo connector's events — a *healthy* one (httpx, reading
every line) and a *stalled* one (a raw socket with a tiny receive buffer that reads nothing
after the response head).  A device then writes over MQTT in paced chunks of QoS 1 publishes
(each waits for its PUBACKs and for the healthy subscriber to catch up, so only the stalled
one can fall behind) until the gateway reports one dropped subscriber.  The publishes go to
a custom topic: each is one ``publish`` event, hence one live-log record (resource writes of
one read are coalesced into one ``data_in`` event by the store).  Then:

* every chunk was acknowledged promptly (the stalled subscriber cost the devices nothing);
* the healthy subscriber saw every ``publish`` event and was not dropped;
* the stalled subscriber, reading again, finds a final ``dropped`` event
  (``slow_consumer``) and then the end of its stream.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import trio

from gateway.testing.mqtt_bytes import gen_connack, gen_connect, gen_puback, gen_publish
from gateway.testing.server import TestGateway

CHUNK = 200  # publishes per paced chunk (below the subscriber buffer of 1024 records)
MAX_PUBLISHES = 40_000  # give up if no drop happened by then
PAYLOAD = "x" * 600  # the log record's detail is cut at 512 characters: ~750 bytes a record
ACK_LIMIT_S = 2.0  # a chunk of 200 committed writes must be acknowledged within this
TOPIC = "telemetry/raw"  # not $resource: a custom publish, one event per packet


async def scrape(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} missing from /metrics")


async def activate(gw: TestGateway, identity: str) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"http://127.0.0.1:{gw.ports['dev_http']}/provision/activate",
            content=f"id={identity}",
            headers={
                "Host": gw.devmode_fqdn(),
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            },
        )
    assert r.status_code == 200, r.text
    return r.text


async def recv_exactly(stream: trio.SocketStream, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed after {bytes(buf)!r}"
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


async def open_stalled(gw: TestGateway) -> tuple[trio.SocketStream, bytes]:
    """The stalled subscriber: a socket that advertises a tiny window and, after the
    response head, reads nothing.  Returns the stream and what it has read so far."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", gw.ports["api"]))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        (
            "GET /api/v1/connectors/demo/logs?kind=events HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {gw.admin_token}\r\n\r\n"
        ).encode()
    )
    seen = b""
    with trio.fail_after(10):
        while b": stream open" not in seen:
            chunk = await stream.receive_some(65536)
            assert chunk, seen
            seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen
    return stream, seen


class Healthy:
    """The subscriber that keeps up: counts ``publish`` records and notes a ``dropped``."""

    def __init__(self) -> None:
        self.records = 0
        self.dropped = False
        self.open = trio.Event()
        self.moved = trio.Event()

    async def run(self, gw: TestGateway) -> None:
        headers = {"Authorization": f"Bearer {gw.admin_token}"}
        url = f"http://127.0.0.1:{gw.ports['api']}/api/v1/connectors/demo/logs?kind=events"
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream("GET", url, headers=headers) as r,
        ):
            assert r.status_code == 200
            event = ""
            async for line in r.aiter_lines():
                if line == ": stream open":
                    self.open.set()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "dropped":
                        self.dropped = True
                    elif json.loads(line[6:])["event"] == "publish":
                        self.records += 1
                    self.moved.set()


async def test_stalled_subscriber_is_dropped_others_and_devices_unaffected(
    gw: TestGateway,
) -> None:
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.ports['api']}")
    # The device is a firehose on purpose (up to 40,000 publishes as fast as they are
    # acknowledged): the connector's publish limit would throttle it (docs/decisions.md
    # "Limits"), which is not what this test is about.
    r = await api.patch(
        "/api/v1/connectors/demo/settings",
        json={"limits": {"publishes": {"rate": 0, "burst": 1}}},
        headers={"Authorization": f"Bearer {gw.admin_token}"},
    )
    assert r.status_code == 200, r.text
    token = await activate(gw, "slow-log-dev")
    dropped_before = await scrape(api, "gateway_log_dropped_subscribers_total")
    healthy = Healthy()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(healthy.run, gw)
        with trio.fail_after(10):
            await healthy.open.wait()
        stalled, _head = await open_stalled(gw)

        device = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_mqtt"])
        buf = bytearray()
        await device.send_all(gen_connect("slow-log-dev", username="", password=token))
        assert await recv_exactly(device, 4, buf) == gen_connack(0)

        sent = 0
        worst_ack_s = 0.0
        dropped = dropped_before
        started = time.monotonic()
        while sent < MAX_PUBLISHES:
            packets = b"".join(
                gen_publish(TOPIC, PAYLOAD, qos=1, mid=(sent + i) % 65535 + 1) for i in range(CHUNK)
            )
            t0 = time.monotonic()
            await device.send_all(packets)
            acks = await recv_exactly(device, 4 * CHUNK, buf)
            worst_ack_s = max(worst_ack_s, time.monotonic() - t0)
            expected = b"".join(gen_puback((sent + i) % 65535 + 1) for i in range(CHUNK))
            assert acks == expected
            sent += CHUNK
            with trio.fail_after(10):  # pace: only the stalled subscriber may fall behind
                while healthy.records < sent:
                    healthy.moved = trio.Event()
                    await healthy.moved.wait()
            if sent % (5 * CHUNK) == 0:
                dropped = await scrape(api, "gateway_log_dropped_subscribers_total")
                if dropped > dropped_before:
                    break
        elapsed = time.monotonic() - started
        assert dropped == dropped_before + 1, (sent, dropped)
        assert worst_ack_s < ACK_LIMIT_S, worst_ack_s
        assert elapsed < 45, elapsed

        # the healthy subscriber kept everything and is still subscribed
        assert healthy.records == sent
        assert not healthy.dropped
        assert await scrape(api, "gateway_log_subscribers") == 1

        # the stalled one reads again: what was buffered, then `dropped`, then the end
        rest = b""
        with trio.fail_after(20):
            while chunk := await stalled.receive_some(1 << 20):
                rest += chunk
                if rest.endswith(b"\r\n0\r\n\r\n"):
                    break  # the chunked body's last chunk: the server ended the response
        tail = rest[rest.rindex(b"event: ") :]
        assert tail.startswith(b"event: dropped\n"), tail[:200]
        data = json.loads(tail.split(b"data: ", 1)[1].split(b"\n", 1)[0])
        assert data["reason"] == "slow_consumer"
        assert rest.count(b"event: log\n") < sent  # it really fell behind
        await stalled.aclose()

        # devices are still served at once after the drop
        await device.send_all(gen_publish(TOPIC, "after", qos=1, mid=1))
        with trio.fail_after(ACK_LIMIT_S):
            assert await recv_exactly(device, 4, buf) == gen_puback(1)
        await device.aclose()
        nursery.cancel_scope.cancel()
    await api.aclose()
