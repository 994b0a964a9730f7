"""kill -9 during QoS 1 streams from many clients: every PUBACKed write survives
(docs/architecture.md principle 2; the gateway runs with ``--synchronous FULL``)."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import trio

from gateway.testing.mqtt_bytes import gen_connect, gen_publish
from gateway.testing.server import gateway_process

CLIENTS = 8


async def _provision(port: int, identity: str) -> str:
    async with await trio.open_tcp_stream("127.0.0.1", port) as s:
        await s.send_all(gen_connect("") + gen_publish(f"$provision/{identity}", b"", qos=1, mid=1))
        buf = b""
        with trio.fail_after(10):
            while len(buf) < 4 + 4 + 2 + 2 + len(f"$provision/{identity}") + 40:
                chunk = await s.receive_some(4096)
                assert chunk
                buf += chunk
        return buf[-40:].decode()


async def _stream(port: int, token: str, acked: list[int], stop: trio.Event) -> None:
    """Publish numbered values at QoS 1, 100 in flight; record every PUBACKed number."""
    try:
        async with await trio.open_tcp_stream("127.0.0.1", port) as s:
            await s.send_all(gen_connect("", username="", password=token))
            assert (await s.receive_some(4))[:2] == b"\x20\x02"
            n = 0
            buf = b""
            while not stop.is_set():
                batch = b"".join(
                    gen_publish("$resource/data_in", str(n + i), qos=1, mid=(n + i) % 65535 + 1)
                    for i in range(100)
                )
                await s.send_all(batch)
                while len(buf) < 400:
                    chunk = await s.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                for i in range(100):
                    assert buf[i * 4] == 0x40
                    acked.append(n + i)
                buf = buf[400:]
                n += 100
    except (trio.BrokenResourceError, OSError):
        return


def test_puback_means_durable(tmp_path: Path):
    data = tmp_path / "data"
    acked: dict[str, list[int]] = {}
    with gateway_process(data, extra=["--synchronous", "FULL"]) as (proc, gw):
        port = gw.ports["dev_mqtt"]

        async def main() -> None:
            tokens = {}
            for i in range(CLIENTS):
                tokens[f"k9-{i}"] = await _provision(port, f"k9-{i}")
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for ident, tok in tokens.items():
                    acked[ident] = []
                    nursery.start_soon(_stream, port, tok, acked[ident], stop)
                await trio.sleep(1.5)
                proc.send_signal(signal.SIGKILL)  # mid-stream
                await trio.sleep(0.5)
                stop.set()

        trio.run(main)
        proc.wait(10)
    assert sum(len(v) for v in acked.values()) > 0
    # every acknowledged value is in the event log after the crash (read the file directly)
    with gateway_process(data) as (_proc, _gw):
        time.sleep(0.2)
    conn = sqlite3.connect(data / "gateway.db")
    try:
        for ident, numbers in acked.items():
            stored = set()
            for (payload,) in conn.execute(
                "SELECT payload FROM events WHERE type = 'data_in' AND identity = ?", (ident,)
            ):
                for entry in json.loads(payload):
                    stored.add(int(entry["values"]["data_in"]))
            missing = set(numbers) - stored
            assert not missing, f"{ident}: {len(missing)} acknowledged values lost"
    finally:
        conn.close()
