"""Chaos for the cluster: QoS 1 load through HAProxy while a node, PostgreSQL or NATS dies.

``python -m bench.chaos_cluster --devices 1000 --fault kill-node`` (``scripts/chaos-cluster``)
runs against a cluster that ``scripts/cluster up`` started (``--dir``, default
``./var/cluster``), or starts one in a temporary directory (``--fresh``).  It provisions the
devices through node 1's management API and runs one Trio task per device that connects to
HAProxy's MQTT/TLS port (SNI ``demo.m2.localhost``, the cluster's CA), publishes numbered
values at QoS 1 (one in flight, ``--rate`` per device per second) and reconnects after a
break (jittered back-off, 50 ms to 1 s).  Once every device is connected (at most 120 s)
and ``--before`` seconds more, it injects the fault:

* ``kill-node``: SIGKILL to a random node's supervisor (the whole node dies; HAProxy's
  health check takes it out, its devices reconnect through HAProxy to the others);
* ``restart-postgresql``: PostgreSQL stopped (fast shutdown), started again ``--outage``
  seconds later;
* ``restart-nats``: nats-server killed, started again ``--outage`` seconds later.

Then it lets the load run ``--after`` seconds and checks, reading the event log through the
management API by cursor (``after=``):

* every PUBACKed value is stored (0 acknowledged writes lost);
* the cursor walk is complete and ordered (``seq`` strictly increasing, each page starting
  after the last);
* while PostgreSQL was gone no write was acknowledged; after a fault every device broken by
  it was back (CONNACK) within ``--max-back`` seconds of the end of the fault.

Bounded: 127.0.0.1 only, one fault, every wait under a deadline.  A quick version runs in the
suite (tests/cluster/test_cluster.py).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from gateway.testing import cluster
from gateway.testing.mqtt_bytes import gen_connect, gen_publish

__all__ = ["ClusterChaosResult", "run_cluster_chaos"]

HOST = "demo.m2.localhost"
FAULTS = ("kill-node", "restart-postgresql", "restart-nats", "none")


@dataclass
class _Device:
    identity: str
    token: str
    acked: list[int] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    connected: bool = False
    connects: list[float] = field(default_factory=list)
    breaks: list[float] = field(default_factory=list)


@dataclass
class ClusterChaosResult:
    fault: str
    devices: int
    acked: int
    lost: int
    events_read: int
    cursor_ok: bool
    acked_while_down: int  # PostgreSQL gone: must be 0
    acked_after: int  # after the fault: the load resumed by itself
    worst_back_s: float
    not_back: int
    elapsed_s: float
    rate: float  # acknowledged writes per second over the run
    detail: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.cursor_ok
            and self.acked_while_down == 0
            and self.not_back == 0
            and self.acked_after > 0
        )

    def summary(self) -> str:
        return (
            f"{self.fault}: {self.devices} devices, {self.acked} writes acknowledged "
            f"({self.rate:.0f}/s), {self.lost} lost; {self.events_read} events read by cursor, "
            f"{'ordered' if self.cursor_ok else 'NOT ORDERED'}; {self.acked_while_down} acked "
            f"while the store was gone, {self.acked_after} after the fault; slowest "
            f"reconnection {self.worst_back_s:.2f} s "
            f"({self.not_back} not back in time); {self.elapsed_s:.0f} s {self.detail}"
        )


async def provision(api: str, headers: dict[str, str], devices: list[_Device]) -> None:
    limit = trio.CapacityLimiter(8)
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


async def _device(
    d: _Device,
    info: cluster.ClusterInfo,
    ctx: ssl.SSLContext,
    period: float,
    stop: trio.Event,
) -> None:
    n = 0
    delay = 0.05
    host, port = info.haproxy.host, info.haproxy.mqtt_tls_port
    await trio.sleep(random.uniform(0, period))  # spread the connects
    while not stop.is_set():
        try:
            with trio.fail_after(10):
                tcp = await trio.open_tcp_stream(host, port)
                stream = trio.SSLStream(tcp, ctx, server_hostname=HOST, https_compatible=True)
                await stream.do_handshake()
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            await trio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)
            continue
        try:
            async with stream:
                await stream.send_all(gen_connect("", username="", password=d.token))
                with trio.fail_after(10):
                    head = await _read(stream, 4)
                if head[:2] != b"\x20\x02" or head[3:4] != b"\x00":
                    raise OSError(f"bad CONNACK {head!r}")
                d.connected = True
                d.connects.append(time.monotonic())
                delay = 0.05
                while not stop.is_set():
                    mid = n % 65535 + 1
                    await stream.send_all(gen_publish("$resource/data_in", str(n), qos=1, mid=mid))
                    with trio.fail_after(15):
                        ack = await _read(stream, 4)
                    if ack[0] != 0x40:
                        raise OSError("no PUBACK")
                    d.acked.append(n)
                    d.ack_times.append(time.monotonic())
                    n += 1
                    await trio.sleep(period * random.uniform(0.8, 1.2))
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError):
            pass
        if d.connected:
            d.connected = False
            if not stop.is_set():
                d.breaks.append(time.monotonic())
        n += 1  # a value sent but not acknowledged is never reused
        await trio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 1.0)


async def _read(stream: trio.SSLStream[trio.SocketStream], size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = await stream.receive_some(size - len(buf))
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf


def read_events(api: str, headers: dict[str, str]) -> tuple[list[dict[str, object]], bool]:
    """Every event of the demo connector by cursor; whether the walk was ordered."""
    out: list[dict[str, object]] = []
    ordered = True
    after = 0
    last = 0
    with httpx.Client(base_url=api, headers=headers, timeout=60) as client:
        while True:
            r = client.get("/connectors/demo/events", params={"after": after, "limit": 1000})
            r.raise_for_status()
            page = r.json()
            items = page["items"]
            for e in items:
                seq = int(e["seq"])
                if seq <= last:
                    ordered = False
                last = seq
            out += items
            if not items:
                return out, ordered
            after = int(page["next"])


def stored_values(events: list[dict[str, object]]) -> set[tuple[str, int]]:
    stored: set[tuple[str, int]] = set()
    for e in events:
        if e["type"] != "data_in":
            continue
        for group in e["payload"]:  # type: ignore[attr-defined]
            for value in group["values"].values():
                stored.add((str(e["identity"]), int(value)))
    return stored


def run_cluster_chaos(
    root: Path,
    *,
    fault: str = "kill-node",
    devices: int = 1000,
    rate: float = 1.0,
    before_s: float = 8.0,
    outage_s: float = 3.0,
    after_s: float = 12.0,
    max_back_s: float = 10.0,
    connect_timeout_s: float = 120.0,
    prefix: str = "chaos",
    log: Callable[[str], None] = print,
) -> ClusterChaosResult:
    """Run the scenario (module docstring) against the cluster in ``root``."""
    info = cluster.load(root)
    token = Path(info.admin_token).read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    api = f"{info.nodes[0].api}/api/v1"
    fleet = [_Device(f"{prefix}{i:05d}", os.urandom(20).hex()) for i in range(devices)]
    ctx = ssl.create_default_context(cafile=info.ca)
    down: list[tuple[float, float]] = []  # (store gone, store back)
    fault_start = 0.0
    fault_end = 0.0
    victim = ""
    t0 = time.monotonic()

    async def main() -> None:
        nonlocal fault_start, fault_end, victim
        await provision(api, headers, fleet)
        log(f"chaos: {devices} devices provisioned; load starts")
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for d in fleet:
                nursery.start_soon(_device, d, info, ctx, 1.0 / rate, stop)
            # every device connected first (bounded), then the load runs a while
            with trio.move_on_after(connect_timeout_s):
                while sum(d.connected for d in fleet) < devices:  # noqa: ASYNC110 (a count)
                    await trio.sleep(0.2)
            log(f"chaos: {sum(d.connected for d in fleet)} of {devices} devices connected")
            await trio.sleep(before_s)
            online = sum(d.connected for d in fleet)
            fault_start = time.monotonic()
            if fault == "kill-node":
                node = random.choice(info.nodes)
                victim = node.name
                os.kill(node.pid, signal.SIGKILL)
                log(f"chaos: SIGKILL {node.name} (pid {node.pid}); {online} online")
            elif fault in ("restart-postgresql", "restart-nats"):
                name = "postgresql" if fault == "restart-postgresql" else "nats"
                p = cluster.proc(root, name)
                os.kill(p.pid, signal.SIGINT if name == "postgresql" else signal.SIGKILL)
                await trio.to_thread.run_sync(cluster.wait_gone, p)
                gone = time.monotonic()
                log(f"chaos: {name} stopped; {online} online")
                await trio.sleep(outage_s)
                back = time.monotonic()
                await trio.to_thread.run_sync(cluster.restart, root, name)
                if name == "postgresql":
                    down.append((gone, back))
                log(f"chaos: {name} started again")
            fault_end = time.monotonic()
            await trio.sleep(after_s)
            stop.set()

    trio.run(main)
    elapsed = time.monotonic() - t0
    events, ordered = read_events(api if victim != info.nodes[0].name else _other(info), headers)
    stored = stored_values([e for e in events if str(e["identity"]).startswith(prefix)])
    acked = {(d.identity, n) for d in fleet for n in d.acked}
    lost = len(acked - stored)
    # an ack "while down": sent after the store was gone (a margin for acks in flight) and
    # before it was started again
    while_down = sum(1 for d in fleet for t in d.ack_times for g, b in down if g + 0.2 < t < b)
    after = sum(1 for d in fleet for t in d.ack_times if t > fault_end)
    worst = 0.0
    not_back = 0
    if fault != "none":
        for d in fleet:
            broken = [b for b in d.breaks if b >= fault_start]
            if not broken:
                continue
            back = next((c for c in d.connects if c > broken[0]), None)
            if back is None or back - fault_end > max_back_s:
                not_back += 1
            else:
                worst = max(worst, back - fault_end)
    return ClusterChaosResult(
        fault,
        devices,
        len(acked),
        lost,
        len(events),
        ordered,
        while_down,
        after,
        worst,
        not_back,
        elapsed,
        len(acked) / elapsed,
        f"(victim {victim})" if victim else "",
    )


def _other(info: cluster.ClusterInfo) -> str:
    return f"{info.nodes[1].api}/api/v1"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=cluster.DEFAULT_DIR, help="the cluster (scripts/cluster up)")
    p.add_argument("--fresh", action="store_true", help="start a cluster in a temporary dir")
    p.add_argument("--fault", choices=FAULTS, default="kill-node")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1.0, help="QoS 1 writes per device per second")
    p.add_argument("--before", type=float, default=10.0)
    p.add_argument("--outage", type=float, default=3.0)
    p.add_argument("--after", type=float, default=15.0)
    p.add_argument("--max-back", type=float, default=10.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos-cluster-") as tmp:
        root = Path(args.dir)
        if args.fresh:
            root = Path(tmp) / "cluster"
            cluster.up(
                root,
                3,
                tls_port=cluster.free_port(),
                mqtt_tls_port=cluster.free_port(),
                api_port_base=0,
            )
        try:
            result = run_cluster_chaos(
                root,
                fault=args.fault,
                devices=args.devices,
                rate=args.rate,
                before_s=args.before,
                outage_s=args.outage,
                after_s=args.after,
                max_back_s=args.max_back,
                prefix=f"chaos{os.getpid()}-",
            )
        finally:
            if args.fresh:
                cluster.down(root)
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
