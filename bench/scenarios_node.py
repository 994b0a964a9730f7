"""The multi-process node (docs/architecture.md "The node"): scale-out figures.

* ``node_hold_tls``: idle MQTT/TLS devices, each with its own identity, held at once by one
  ``gateway serve`` started as the README says (no ``--workers``: the default node).  The
  generator is spread over several processes (at most 9,000 sockets each) and over source
  addresses 127.0.0.2-127.0.0.9 (one address has only ~28,000 ports toward one server
  port).  Rows: devices held, refused, and resident memory per device summed over every
  process of the gateway (RSS, and PSS, which splits the pages the forked processes share).
  40,000 devices in a full run.
* ``node_qos1``: QoS 1 writes from 1,000 devices over plain MQTT, 1 vs 2 workers
  (``gateway-w1``, ``gateway-w2``): throughput, ack latency, server CPU per message; one
  PUBLISH per record (skipped while the generator cannot, bench/README.md), and
  ``node_qos1_batched`` with the generator's batched sends.
* ``node_http``: HTTP device writes with wrk (256 connections, one device each), 1 vs 2
  workers.

On a 2-core machine the generator shares the cores with the gateway: RESULTS.md says where
that limits the scaling.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench import gwclient, peers
from bench.httpgen import GeneratorMissing, HttpWrites, run_wrk
from bench.loadcfg import MAX_CONNS_PER_PROCESS, MqttLoad
from bench.loadgen import LoadRun
from bench.peers import PeerUnavailable, Server, process_tree, tree_cpu_seconds
from bench.scenarios import (
    Ctx,
    Row,
    _mqtt_endpoint,
    _publish_measured,
    _rows_from_runs,
    _skip,
    qos1_window,
    record_framing,
)
from bench.scenarios_http import _measured as _http_measured

log = logging.getLogger("bench")

SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 10))
WORKER_COUNTS = (1, 2)


def pss_of(pid: int) -> int:
    """Proportional set size of ``pid`` (shared pages split between their users), bytes."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _pss(srv: Server) -> int:
    return sum(pss_of(p) for p in process_tree(srv.root))


# Handshake pacing of node_hold_tls: at most HOLD_IN_FLIGHT connections in progress over all
# generator workers and HOLD_RATE new ones per second.  The run of 2026-11-30 21:00 (load
# average 8) started 1,280 unpaced handshakes at once (256 per worker, five workers) and
# ended after its 630 s connect bound with "load generator worker did not answer": the
# parent could not tell which worker, in which state, nor a dead worker from a slow one (it
# kept a copy of every worker's pipe end, so a killed worker never read as EOF).  Now every
# worker reports progress and a failure names it (bench/loadgen.py LoadRun), and paced
# handshakes each finish well within the gateway's handshake deadline
# (GatewayConfig.handshake_timeout_s) instead of queueing behind a thousand others on a
# loaded machine; the phase takes about devices / min(HOLD_RATE, the machine's handshake
# rate) seconds, bounded by HOLD_CONNECT_TIMEOUT.
HOLD_IN_FLIGHT = 240
HOLD_RATE = 600.0
HOLD_CONNECT_TIMEOUT = 900.0
REFUSAL_METRICS = ("gateway_refused_total", "gateway_limited_total", "gateway_handshakes_total")


def gateway_refusals(srv: Server) -> str:
    """The gateway's own count of what it refused and why (its /metrics, non-zero samples
    of REFUSAL_METRICS), so that a refused device has a reason from both sides."""
    port = srv.ports.get("api")
    if not port:
        return ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            text = resp.read().decode()
    except OSError as exc:
        return f"/metrics unavailable: {exc}"
    found = []
    for line in text.splitlines():
        if line.startswith(REFUSAL_METRICS):
            sample, _, value = line.rpartition(" ")
            if float(value) and not sample.endswith("_created"):
                found.append(f"{sample} {float(value):.0f}")
    return ", ".join(found)


def node_hold_tls(ctx: Ctx) -> list[Row]:
    name = "node_hold_tls"
    n = 200 if ctx.smoke else 4_000 if ctx.quick else 40_000
    target = "gateway"
    try:
        with peers.gateway(ctx.work / name, workers=None) as srv:
            t_prov = time.monotonic()
            port, creds, _topic, sni = _mqtt_endpoint(target, srv, True, n)
            log.info("%s: %d devices provisioned in %.0f s", name, n, time.monotonic() - t_prov)
            time.sleep(1.0)
            rss0, pss0 = srv.rss_bytes(), _pss(srv)
            procs = len(process_tree(srv.root))
            workers = -(-n // MAX_CONNS_PER_PROCESS)
            cfg = MqttLoad(
                port=port,
                connections=n,
                credentials=creds,
                tls=True,
                server_hostname=sni,
                processes=workers,
                connect_concurrency=max(1, HOLD_IN_FLIGHT // workers),
                connect_rate=HOLD_RATE,
                connect_timeout=HOLD_CONNECT_TIMEOUT,
                source_hosts=SOURCES,
            )
            t0 = time.monotonic()
            with LoadRun(cfg, "hold") as run:
                took = time.monotonic() - t0
                time.sleep(2.0)
                rss1, pss1 = srv.rss_bytes(), _pss(srv)
                held = run.result.connections
                errs = run.result.errors
                refusals = gateway_refusals(srv) if errs else ""
                run.release()
    except PeerUnavailable as exc:
        return _skip(name, target, [str(n)], str(exc))
    note = (
        f"{held} held of {n} in {took:.0f} s by {procs} processes (generator: {workers}"
        f" processes, <= {HOLD_IN_FLIGHT} handshakes in flight, <= {HOLD_RATE:.0f} new/s);"
        f" RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB, PSS {pss0 / 2**20:.0f} ->"
        f" {pss1 / 2**20:.0f} MiB (sums over the processes)"
    )
    if errs:
        note += f"; refused by reason (generator): {errs}"
    if refusals:
        note += f"; the gateway's counters: {refusals}"
    rows = [
        Row(name, target, str(n), "held", "devices", held, [held], note),
        Row(name, target, str(n), "refused", "devices", n - held, [n - held]),
        Row(name, target, str(n), "connect_seconds", "s", took, [round(took, 1)]),
    ]
    if held:
        rows += [
            Row(name, target, str(n), "rss_per_device", "B", rss1 / held, [round(rss1 / held)]),
            Row(
                name,
                target,
                str(n),
                "rss_growth_per_device",
                "B",
                (rss1 - rss0) / held,
                [round((rss1 - rss0) / held)],
            ),
            Row(name, target, str(n), "pss_per_device", "B", pss1 / held, [round(pss1 / held)]),
            Row(
                name,
                target,
                str(n),
                "pss_growth_per_device",
                "B",
                (pss1 - pss0) / held,
                [round((pss1 - pss0) / held)],
            ),
        ]
    return rows


def _owner_pid(srv: Server) -> int | None:
    """The store owner's pid from run.json (None for a single process)."""
    info = json.loads((Path(srv.extra["data"]) / "run.json").read_text())
    return next((p["pid"] for p in info.get("processes", []) if p["role"] == "store"), None)


class _OwnerCpu:
    """The store owner's CPU seconds over a measured phase: its share of each message is
    the node's write ceiling on any number of cores (one writer, docs/decisions.md)."""

    def __init__(self, srv: Server) -> None:
        self.pid = _owner_pid(srv)
        self.seconds = 0.0

    def __enter__(self) -> _OwnerCpu:
        if self.pid:
            self.seconds = -tree_cpu_seconds(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid:
            self.seconds += tree_cpu_seconds(self.pid)


def _owner_row(name: str, target: str, load: str, owner: list[tuple[float, int]]) -> list[Row]:
    per = [cpu / n * 1e6 for cpu, n in owner if n]
    if not per:
        return []
    per.sort()
    return [
        Row(
            name,
            target,
            load,
            "owner_cpu_per_msg",
            "µs",
            per[len(per) // 2],
            [round(x, 1) for x in per],
            "the store owner's CPU per message (its ceiling: 1e6 / this per second)",
        )
    ]


def _qos1_ceiling(ctx: Ctx, name: str, n: int, framing: dict[str, bool]) -> list[Row]:
    """The generator's ceiling for node_qos1: the same load (devices, window, framing,
    processes) against the null sink (bench/nullsink.py, PUBACK for every PUBLISH and no
    other work), in the same run; the report puts its rate beside every figure."""
    target = "nullsink"
    try:
        with peers.null_sink("mqtt", tls=False, workdir=ctx.work / name / target) as sink:
            cfg = MqttLoad(
                port=sink.ports["mqtt"],
                connections=n,
                qos=1,
                window=qos1_window(n),
                duration=ctx.duration,
                processes=1,
                drain_timeout=30.0,
                **framing,
            )
            runs = [_publish_measured(sink, cfg) for _ in range(ctx.repeats)]
    except PeerUnavailable as exc:
        return _skip(name, target, [str(n)], str(exc))
    for r, _ in runs:
        log.info("%s %s n=%d: %.0f msg/s %s", name, target, n, r.rate, r.errors)
    got = _rows_from_runs(name, target, str(n), runs, latency=True)
    got[0].note = "the generator's ceiling: the same load against the null sink"
    return got


def node_qos1(ctx: Ctx, *, batched: bool = False) -> list[Row]:
    name = "node_qos1" + ("_batched" if batched else "")
    n = 4 if ctx.smoke else 1000
    rows: list[Row] = []
    try:
        framing = record_framing(batched)
    except PeerUnavailable as exc:
        return [r for w in WORKER_COUNTS for r in _skip(name, f"gateway-w{w}", [str(n)], str(exc))]
    rows += _qos1_ceiling(ctx, name, n, framing)
    for workers in WORKER_COUNTS:
        target = f"gateway-w{workers}"
        try:
            with peers.gateway(ctx.work / name / target, workers=workers) as srv:
                port, creds, topic, _sni = _mqtt_endpoint("gateway", srv, False, n)
                cfg = MqttLoad(
                    port=port,
                    connections=n,
                    qos=1,
                    window=qos1_window(n),
                    duration=ctx.duration,
                    topic=topic,
                    processes=1,
                    credentials=creds,
                    drain_timeout=30.0,
                    **framing,
                )
                runs, owner = [], []
                for _ in range(ctx.repeats):
                    with _OwnerCpu(srv) as oc:
                        runs.append(_publish_measured(srv, cfg))
                    owner.append((oc.seconds, runs[-1][0].acked))
                for r, _ in runs:
                    log.info("%s %s n=%d: %.0f msg/s %s", name, target, n, r.rate, r.errors)
                rows += _rows_from_runs(name, target, str(n), runs, latency=True)
                if workers > 1:
                    rows += _owner_row(name, target, str(n), owner)
        except PeerUnavailable as exc:
            rows += _skip(name, target, [str(n)], str(exc))
    return rows


def _http_ceiling(ctx: Ctx, name: str, conns: int, devices: int) -> list[Row]:
    """The generator's ceiling for node_http: the same wrk load (threads, connections, plain
    HTTP/1.1) against nginx ``return 204`` in the same run."""
    target = "nginx"
    try:
        with peers.nginx_sink(ctx.work / name / target) as sink:
            load = HttpWrites(
                port=sink.ports["http"],
                host="localhost",
                connections=conns,
                devices=devices,
                duration=ctx.duration,
                tls=False,
            )
            runs, cmd = [], ""
            for _ in range(ctx.repeats):
                res, cores, cmd = _http_measured(sink, run_wrk, load)
                log.info("%s %s c=%d: %.0f req/s %s", name, target, conns, res.rate, res.errors)
                runs.append((res, cores))
    except (PeerUnavailable, GeneratorMissing) as exc:
        return _skip(name, target, [str(conns)], str(exc))
    got = _rows_from_runs(name, target, str(conns), runs, latency=True)
    got[0].note = "; ".join(
        x for x in ("the generator's ceiling: the same wrk load against nginx", f"`{cmd}`") if x
    )
    return got


def node_http(ctx: Ctx) -> list[Row]:
    name = "node_http"
    conns = devices = 4 if ctx.smoke else 256
    rows: list[Row] = _http_ceiling(ctx, name, conns, devices)
    for workers in WORKER_COUNTS:
        target = f"gateway-w{workers}"
        try:
            with peers.gateway(ctx.work / name / target, workers=workers) as srv:
                port = srv.ports.get("dev_http")
                if not port:
                    raise PeerUnavailable(f"{peers.GATEWAY_UNAVAILABLE}: no dev_http port")
                tokens = [c.password or "" for c in gwclient.provision_many(srv, devices, "http")]
                host = f"{srv.extra['connector']}.devmode-m2.{srv.extra['base_domain']}"
                load = HttpWrites(
                    port=port,
                    host=host,
                    connections=conns,
                    devices=devices,
                    duration=ctx.duration,
                    tls=False,
                    tokens=tuple(tokens),
                )
                runs, cmd, owner = [], "", []
                for _ in range(ctx.repeats):
                    with _OwnerCpu(srv) as oc:
                        res, cores, cmd = _http_measured(srv, run_wrk, load)
                    owner.append((oc.seconds, res.acked or res.sent))
                    log.info("%s %s c=%d: %.0f req/s %s", name, target, conns, res.rate, res.errors)
                    runs.append((res, cores))
                got = _rows_from_runs(name, target, str(conns), runs, latency=True)
                got[0].note = "; ".join(
                    x for x in (f"{devices} devices", f"`{cmd}`", got[0].note) if x
                )
                rows += got
                if workers > 1:
                    rows += _owner_row(name, target, str(conns), owner)
        except (PeerUnavailable, GeneratorMissing) as exc:
            rows += _skip(name, target, [str(conns)], str(exc))
    return rows


NODE_SCENARIOS: dict[str, Callable[[Ctx], list[Row]]] = {
    "node_hold_tls": node_hold_tls,
    "node_qos1": node_qos1,
    "node_qos1_batched": lambda c: node_qos1(c, batched=True),
    "node_http": node_http,
}

__all__ = ["NODE_SCENARIOS", "pss_of"]
