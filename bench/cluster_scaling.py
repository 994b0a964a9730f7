"""Cluster throughput with 1, 2 and 3 nodes on this machine (docs/scale.md).

``python -m bench.cluster_scaling`` (``scripts/bench-cluster``) starts a cluster
(``gateway/testing/cluster.py``: PostgreSQL, NATS JetStream, HAProxy) with 1, then 2, then 3
nodes of ``--workers`` workers each, in a temporary directory; for each it provisions
``--devices`` devices and drives them through HAProxy's MQTT/TLS port at QoS 1 (one write in
flight per device, as fast as the PUBACKs come: the load of bench/chaos_cluster.py without a
fault) for ``--seconds``, and reports:

* acknowledged writes per second (every acknowledgement is a PostgreSQL commit);
* CPU per write, in µs, of each part: the gateway nodes (every process of every node),
  PostgreSQL (the postmaster and its backends), NATS, HAProxy, and the generator (this
  process), from /proc utime+stime over the measured window.

One machine: every part and the generator share its cores, so the rate cannot grow with the
nodes here; the CPU per write of each part is the figure that carries to a real cluster
(docs/scale.md turns it into a sizing plan).  Bounded: three short runs, 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench import report
from bench.chaos_cluster import _Device, _device, provision
from gateway.testing import cluster
from gateway.testing.node import tree_pids

__all__ = ["measure"]

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def _parts(root: Path) -> dict[str, list[int]]:
    state = cluster._load_state(root)
    assert state is not None
    parts: dict[str, list[int]] = {"nodes": [], "postgresql": [], "nats": [], "haproxy": []}
    for p in state.procs:
        key = {"gateway": "nodes", "postgres": "postgresql", "nats-server": "nats"}.get(
            p.program, p.program
        )
        parts[key] += tree_pids(p.pid)
    parts["generator"] = [os.getpid()]
    return parts


def measure(root: Path, *, devices: int, seconds: float, prefix: str) -> dict[str, float]:
    info = cluster.load(root)
    token = Path(info.admin_token).read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    fleet = [_Device(f"{prefix}{i:05d}", os.urandom(20).hex()) for i in range(devices)]
    ctx = ssl.create_default_context(cafile=info.ca)
    out: dict[str, float] = {}

    async def main() -> None:
        await provision(f"{info.nodes[0].api}/api/v1", headers, fleet)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for d in fleet:
                nursery.start_soon(_device, d, info, ctx, 0.0, stop)
            with trio.fail_after(60):
                while sum(d.connected for d in fleet) < devices:  # noqa: ASYNC110 (a count)
                    await trio.sleep(0.2)
            await trio.sleep(2.0)  # warm up
            parts = _parts(root)
            cpu0 = {k: _cpu_s(v) for k, v in parts.items()}
            acked0 = sum(len(d.acked) for d in fleet)
            t0 = time.monotonic()
            await trio.sleep(seconds)
            elapsed = time.monotonic() - t0
            acked = sum(len(d.acked) for d in fleet) - acked0
            cpu1 = {k: _cpu_s(v) for k, v in parts.items()}
            stop.set()
        out["writes_per_s"] = acked / elapsed
        for k in parts:
            out[f"{k}_us_per_write"] = (cpu1[k] - cpu0[k]) / max(acked, 1) * 1e6
            out[f"{k}_cores"] = (cpu1[k] - cpu0[k]) / elapsed

    trio.run(main)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", default="1,2,3")
    p.add_argument("--workers", type=int, default=1, help="workers per node [1]")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    rows = []
    t_start = time.time()
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    for n in [int(x) for x in args.nodes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
            root = Path(tmp) / "cluster"
            cluster.up(
                root,
                n,
                tls_port=cluster.free_port(),
                mqtt_tls_port=cluster.free_port(),
                api_port_base=0,
                workers=args.workers,
            )
            try:
                row = measure(root, devices=args.devices, seconds=args.seconds, prefix=f"b{n}-")
            finally:
                cluster.down(root)
        row["nodes"] = n
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {
        "command": "scripts/bench-cluster " + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)),
        "loadavg": loadavg,
        "workers": args.workers,
        "devices": args.devices,
        "seconds": args.seconds,
        "rows": rows,
    }
    out = Path(__file__).parent / "results_cluster.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    report.splice_cluster(Path(__file__).parent / "RESULTS.md", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
