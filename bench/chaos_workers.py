"""Chaos for the multi-process node: QoS 1 load from many devices while workers are killed.

``python -m bench.chaos_workers --devices 1000 --kills 10`` (``scripts/chaos-workers``)
starts ``gateway serve --workers 2`` (``synchronous=FULL``) on 127.0.0.1 ephemeral ports,
provisions the devices, and runs one Trio task per device that publishes numbered values at
QoS 1 on the plain dev MQTT port (one in flight, ``--rate`` per device per second) and
reconnects after a break (jittered back-off from 50 ms to 1 s).  Meanwhile it kills a
random worker with SIGKILL every ``--interval`` seconds, ``--kills`` times.  Then it stops
the node with SIGTERM and checks, reading the database file:

* every PUBACKed value is stored (0 acknowledged writes lost);
* every device that lost its connection to a kill was back (CONNACK) within ``--max-back``
  seconds of that kill;
* ``PRAGMA integrity_check`` answers ``ok``.

Bounded: only 127.0.0.1, a fixed number of kills, every wait under a deadline.  The quick
version runs in the suite (tests/node/test_chaos.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from gateway.testing.mqtt_bytes import gen_connect, gen_publish
from gateway.testing.node import read_run_json, worker_pid
from gateway.testing.server import gateway_process

__all__ = ["ChaosResult", "run_chaos"]


@dataclass
class _Device:
    identity: str
    token: str
    acked: list[int] = field(default_factory=list)
    connected: bool = False
    connects: list[float] = field(default_factory=list)  # monotonic time of each CONNACK
    breaks: list[float] = field(default_factory=list)


@dataclass
class ChaosResult:
    devices: int
    kills: int
    acked: int
    lost: int
    integrity: str
    worst_back_s: float  # the slowest reconnection after a kill
    not_back: int  # devices broken by a kill that never came back in time
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.integrity == "ok" and self.not_back == 0

    def summary(self) -> str:
        return (
            f"{self.devices} devices, {self.kills} worker kills in {self.elapsed_s:.0f} s: "
            f"{self.acked} writes acknowledged, {self.lost} lost; slowest reconnection "
            f"{self.worst_back_s:.2f} s after its kill ({self.not_back} not back in time); "
            f"integrity_check {self.integrity}"
        )


async def _provision(api: str, headers: dict[str, str], devices: list[_Device]) -> None:
    limit = trio.CapacityLimiter(16)
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:

        async def one(d: _Device) -> None:
            async with limit:
                r = await client.post(
                    "/connectors/demo/devices",
                    json={"identity": d.identity, "auth": {"type": "token", "key": d.token}},
                )
                assert r.status_code == 201, r.text

        async with trio.open_nursery() as nursery:
            for d in devices:
                nursery.start_soon(one, d)


class _Started:
    """Set once every device has connected for the first time."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.event = trio.Event()

    def one(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.event.set()


async def _device(
    d: _Device,
    port: int,
    period: float,
    stop: trio.Event,
    started: _Started,
    local: str | None = None,
) -> None:
    """One device's QoS 1 loop; ``d.acked`` is its ledger of acknowledged writes.  ``local``:
    the source address (127.0.0.x) to connect from (bench/chaos.py spreads its devices)."""
    n = 0
    delay = 0.05
    while not stop.is_set():
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
        except OSError:
            await trio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)
            continue
        try:
            async with stream:
                await stream.send_all(gen_connect("", username="", password=d.token))
                with trio.fail_after(10):
                    head = await stream.receive_some(4)
                if head[:2] != b"\x20\x02" or head[3:4] != b"\x00":
                    raise OSError(f"bad CONNACK {head!r}")
                d.connected = True
                if not d.connects:
                    started.one()
                d.connects.append(time.monotonic())
                delay = 0.05
                while not stop.is_set():
                    mid = n % 65535 + 1
                    await stream.send_all(gen_publish("$resource/data_in", str(n), qos=1, mid=mid))
                    with trio.fail_after(15):
                        ack = await stream.receive_some(4)
                    if len(ack) < 4 or ack[0] != 0x40:
                        raise OSError("no PUBACK")
                    d.acked.append(n)
                    n += 1
                    await trio.sleep(period * random.uniform(0.8, 1.2))
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            pass
        if d.connected:
            d.connected = False
            if not stop.is_set():
                d.breaks.append(time.monotonic())
        n += 1  # a value sent but not acknowledged is never reused
        await trio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 1.0)


def _stored(db: Path) -> tuple[set[tuple[str, int]], str]:
    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored: set[tuple[str, int]] = set()
        for identity, payload in conn.execute(
            "SELECT identity, payload FROM events WHERE type = 'data_in'"
        ):
            for group in json.loads(payload):
                for value in group["values"].values():
                    stored.add((identity, int(value)))
    finally:
        conn.close()
    return stored, integrity


def run_chaos(
    data: Path,
    *,
    devices: int = 1000,
    kills: int = 10,
    interval_s: float = 6.0,
    rate: float = 1.0,
    max_back_s: float = 10.0,
    settle_s: float = 5.0,
    workers: int = 2,
    log=print,
) -> ChaosResult:
    """Run the scenario (see the module docstring) on a fresh data directory ``data``."""
    fleet = [_Device(f"chaos{i:05d}", os.urandom(20).hex()) for i in range(devices)]
    kill_times: list[float] = []
    t0 = time.monotonic()
    with gateway_process(data, workers=workers, extra=["--synchronous", "FULL"], timeout=120) as (
        proc,
        gw,
    ):

        async def main() -> None:
            await _provision(gw.api, gw.admin_headers, fleet)
            log(f"chaos: {devices} devices provisioned; load starts")
            stop = trio.Event()
            started = _Started(devices)
            async with trio.open_nursery() as nursery:
                for d in fleet:
                    port = gw.ports["dev_mqtt"]
                    nursery.start_soon(_device, d, port, 1.0 / rate, stop, started)
                with trio.fail_after(60):
                    await started.event.wait()
                log("chaos: every device connected")
                for k in range(kills):
                    await trio.sleep(interval_s)
                    info = read_run_json(data)
                    assert info is not None
                    index = random.randint(1, workers)
                    pid = worker_pid(info, index)
                    os.kill(pid, signal.SIGKILL)
                    kill_times.append(time.monotonic())
                    online = sum(d.connected for d in fleet)
                    log(f"chaos: kill {k + 1}/{kills}: worker {index} (pid {pid}); {online} online")
                await trio.sleep(settle_s)
                stop.set()

        trio.run(main)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    elapsed = time.monotonic() - t0
    stored, integrity = _stored(data / "gateway.db")
    acked = {(d.identity, n) for d in fleet for n in d.acked}
    lost = len(acked - stored)
    worst = 0.0
    not_back = 0
    for d in fleet:
        for b in d.breaks:
            kill = max((k for k in kill_times if k <= b + 0.5), default=None)
            if kill is None or b - kill > max_back_s:
                continue  # not a break caused by a kill
            back = next((c for c in d.connects if c > b), None)
            if back is None or back - kill > max_back_s:
                not_back += 1
            else:
                worst = max(worst, back - kill)
    return ChaosResult(
        devices, len(kill_times), len(acked), lost, integrity, worst, not_back, elapsed
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--interval", type=float, default=6.0, help="seconds between kills")
    p.add_argument("--rate", type=float, default=1.0, help="QoS 1 writes per device per second")
    p.add_argument("--max-back", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", help="data directory (default: a temporary one)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        result = run_chaos(
            data,
            devices=args.devices,
            kills=args.kills,
            interval_s=args.interval,
            rate=args.rate,
            max_back_s=args.max_back,
            workers=args.workers,
        )
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
