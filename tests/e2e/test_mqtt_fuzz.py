"""Fuzzing a live gateway's plain MQTT port with garbage and mutated packets: the process
survives, each bad connection ends alone, a well-behaved client keeps working, and nothing
that was not a complete valid write is stored (docs/architecture.md principle 6)."""

from __future__ import annotations

import random
import secrets
import sqlite3
from pathlib import Path

import trio

from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_puback,
    gen_publish,
    gen_subscribe,
)
from gateway.testing.server import TestGateway

ROUNDS = 150
SEED = 20240601


def _mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif op == 2:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        else:
            data += rng.randbytes(rng.randint(1, 16))
    return bytes(data)


async def _hit(port: int, payload: bytes) -> None:
    try:
        async with await trio.open_tcp_stream("127.0.0.1", port) as s:
            await s.send_all(payload)
            with trio.move_on_after(0.3):
                while await s.receive_some(65536):
                    pass
    except (trio.BrokenResourceError, OSError):
        pass


async def test_fuzz_never_crashes_or_stores_partial_state(gw: TestGateway) -> None:
    rng = random.Random(SEED)
    token = secrets.token_hex(20)
    await gw.services.devices.add("demo", "good", auth_type="token", key=token)
    port = gw.ports["dev_mqtt"]
    templates = [
        gen_connect("", username="", password="0" * 40),
        gen_connect("fz") + gen_publish("$provision/fz-x", b"", qos=1, mid=1),
        gen_connect("fz") + gen_publish("$resource/data_in", "evil", qos=1, mid=2),
        gen_connect("fz") + gen_subscribe(3, [("a/#", 1)]),
        gen_connect("fz", will_topic="w", will_payload=b"p"),
    ]
    async with await trio.open_tcp_stream("127.0.0.1", port) as good:
        await good.send_all(gen_connect("", keepalive=0, username="", password=token))
        assert await good.receive_some(4) == gen_connack(0)
        for i in range(ROUNDS):
            if i % 3 == 0:
                payload = rng.randbytes(rng.randint(1, 200))
            else:
                payload = _mutate(rng, rng.choice(templates))
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(_hit, port, payload)
            if i % 25 == 0:
                mid = i % 65535 + 1
                await good.send_all(gen_publish("$resource/data_in", f"ok-{i}", qos=1, mid=mid))
                with trio.fail_after(5):
                    assert await good.receive_some(4) == gen_puback(mid)
    state = await gw.services.state.get("demo", "good")
    assert state["data_in"].reported == f"ok-{(ROUNDS - 1) // 25 * 25}"
    # mutated anonymous connections never wrote a resource value anywhere
    conn = sqlite3.connect(Path(gw.info.data) / "gateway.db")  # read-only check of the file
    (evil,) = conn.execute("SELECT count(*) FROM state WHERE reported = 'evil'").fetchone()
    conn.close()
    assert evil == 0
    for _ in range(100):  # the good client's connection has closed: nothing attached
        if gw.services.control.session_count == 0:
            break
        await trio.sleep(0.05)
    assert gw.services.control.session_count == 0
