"""The benchmark scenarios: gateway and peers measured side by side in the same run.

Each scenario starts its servers itself, runs every load ``repeats`` times and returns rows
with the median (and every run) per (target, load, metric).  A target that cannot run here
yields a row with ``value=None`` and the reason in ``note`` (never a made-up number).
Ratios gateway/peer are computed by the report from rows of the same run.  The HTTP
scenarios (wrk, h2load) live in bench/scenarios_http.py.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import gwclient, peers
from bench import mqtt_wire as wire
from bench.loadcfg import Credentials, LoadResult, MqttLoad
from bench.loadgen import LoadRun, connect_storm
from bench.peers import PeerUnavailable, Server

log = logging.getLogger("bench")
ROOT = peers.ROOT


@dataclass
class Row:
    """One measured (or skipped) figure."""

    scenario: str
    target: str
    load: str
    metric: str
    unit: str
    value: float | None
    runs: list[float] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Ctx:
    """Settings shared by all scenarios of one `scripts/bench` invocation."""

    work: Path
    quick: bool
    repeats: int
    duration: float
    smoke: bool = False  # tests/bench: tiny loads that prove the machinery, not the speed

    def scaled(self, quick: list[int], full: list[int]) -> list[int]:
        return quick if self.quick else full


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _rows_from_runs(
    scenario: str, target: str, load: str, runs: list[tuple[LoadResult, float]], *, latency: bool
) -> list[Row]:
    """Median rows for rate (+ latency), the server CPU share and, where the scenario measured
    it, the server's CPU per message (µs), plus an errors note."""
    ok = [(r, cpu) for r, cpu in runs if r.rate > 0]
    errs: dict[str, int] = {}
    for r, _cpu in runs:
        for k, v in r.errors.items():
            errs[k] = errs.get(k, 0) + v
    note = f"errors: {errs}" if errs else ""
    if not ok:
        return [Row(scenario, target, load, "rate", "msg/s", None, [], note or "no successful run")]
    rows = [
        Row(
            scenario,
            target,
            load,
            "rate",
            "msg/s",
            _median([r.rate for r, _ in ok]),
            [round(r.rate) for r, _ in ok],
            note,
        ),
        Row(
            scenario,
            target,
            load,
            "server_cpu",
            "cores",
            _median([c for _, c in ok]),
            [round(c, 2) for _, c in ok],
        ),
        Row(
            scenario,
            target,
            load,
            "loadgen_cpu",
            "cores",
            _median([r.cpu_seconds / r.elapsed for r, _ in ok if r.elapsed]),
            [round(r.cpu_seconds / r.elapsed, 2) for r, _ in ok if r.elapsed],
        ),
    ]
    per_msg = [
        r.server_cpu_seconds / (r.acked if r.qos else r.sent) * 1e6
        for r, _ in ok
        if r.server_cpu_seconds is not None and (r.acked if r.qos else r.sent)
    ]
    if per_msg:
        rows.append(
            Row(
                scenario,
                target,
                load,
                "cpu_per_msg",
                "µs",
                _median(per_msg),
                [round(x, 1) for x in per_msg],
            )
        )
    if latency:
        p50 = [r.p50_ms for r, _ in ok if r.p50_ms is not None]
        p99 = [r.p99_ms for r, _ in ok if r.p99_ms is not None]
        rows += [
            Row(scenario, target, load, "p50", "ms", _median(p50), [round(x, 3) for x in p50]),
            Row(scenario, target, load, "p99", "ms", _median(p99), [round(x, 3) for x in p99]),
        ]
    return rows


def _measured(server: Server, fn: Callable[[], LoadResult]) -> tuple[LoadResult, float]:
    """Run `fn`; return its result and the server's CPU use in cores over the same wall time
    (the server's whole process tree: peers.tree_cpu_seconds)."""
    c0, t0 = server.cpu_seconds(), time.monotonic()
    res = fn()
    c1, t1 = server.cpu_seconds(), time.monotonic()
    return res, (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def _publish_measured(server: Server, cfg: MqttLoad) -> tuple[LoadResult, float]:
    """One publish run with the server's CPU taken over the timed phase only (connections
    are open before and closed after it, so handshakes do not count per message); the
    result carries ``server_cpu_seconds``, the second item is the CPU share in cores."""
    with LoadRun(cfg, "publish") as run:
        if run.result.connections == 0:
            return run.result, 0.0
        c0, t0 = server.cpu_seconds(), time.monotonic()
        res = run.go()
        c1, t1 = server.cpu_seconds(), time.monotonic()
    res.server_cpu_seconds = c1 - c0
    return res, (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def _skip(scenario: str, target: str, loads: list[str], why: str) -> list[Row]:
    log.warning("%s/%s skipped: %s", scenario, target, why)
    return [Row(scenario, target, load, "rate", "", None, [], f"skipped: {why}") for load in loads]


# ------------------------------------------------------------------------- MQTT targets

TargetFactory = Callable[[Path, bool], AbstractContextManager[Server]]


def _mqtt_targets(with_sink: bool = True) -> list[tuple[str, TargetFactory]]:
    out: list[tuple[str, TargetFactory]] = []
    if with_sink:
        out.append(("nullsink", lambda w, tls: peers.null_sink("mqtt", tls=tls, workdir=w)))
    out += [
        ("mosquitto", lambda w, tls: peers.mosquitto(w, persistence=False)),
        ("mosquitto-persist", lambda w, tls: peers.mosquitto(w, persistence=True)),
        ("amqtt", lambda w, tls: peers.amqtt(w, tls=tls)),
        ("aedes", lambda w, tls: peers.aedes(w, tls=tls)),
        ("gateway", lambda w, tls: peers.gateway(w)),
    ]
    return out


def _mqtt_endpoint(
    target: str, srv: Server, tls: bool, devices: int
) -> tuple[int, tuple[Credentials, ...], str, str | None]:
    """(port, credentials, publish topic, SNI name) for `devices` connections to `srv`."""
    if target == "gateway":
        port = srv.ports.get("mqtt_tls" if tls else "dev_mqtt")
        if not port:
            raise PeerUnavailable(
                f"{gwclient.MQTT_UNAVAILABLE}: no {'mqtt_tls' if tls else 'dev_mqtt'} port"
            )
        creds = tuple(gwclient.provision_many(srv, devices))
        sni = f"{srv.extra['connector']}.m2.{srv.extra['base_domain']}"
        return port, creds, "$resource/data_in", sni
    key = "mqtt_tls" if tls else "mqtt"
    if key not in srv.ports:
        raise PeerUnavailable(f"{target} has no {key} listener")
    return srv.ports[key], (), "$resource/data_in", "localhost"


def qos1_window(devices: int) -> int:
    """In-flight QoS 1 publishes per connection: 100 (a device library's window) up to 100
    devices, then at most 10,000 in flight in total (1,000 devices get 10 each), so that a
    slow peer still drains within the timeout."""
    return 100 if devices <= 100 else max(1, 10_000 // devices)


# ------------------------------------------------------------------------- record framing
# Devices send each PUBLISH on its own: one TLS record, one TCP send.  Every MQTT publish
# scenario does so by default; the `*_batched` scenarios pack many PUBLISHes into one record
# (one send) and say so in their name.  The knob is the load generator's (bench/loadgen.py,
# kept by its own engineer): the boolean field ``MqttLoad.per_record``.  A generator without
# it can only batch, so the per-record scenarios skip with that reason rather than report a
# batched figure under a per-record name (a number that flatters the gateway is a defect).

PER_RECORD_FIELD = "per_record"


def record_framing(batched: bool) -> dict[str, bool]:
    """MqttLoad keyword arguments for one PUBLISH per record (or batched records)."""
    if PER_RECORD_FIELD in {f.name for f in dataclasses.fields(MqttLoad)}:
        return {PER_RECORD_FIELD: not batched}
    if batched:
        return {}  # this generator packs many PUBLISHes per send: batched is all it does
    raise PeerUnavailable(
        "the load generator cannot send one PUBLISH per record yet"
        f" (bench/loadcfg.py MqttLoad has no {PER_RECORD_FIELD!r})"
    )


# ------------------------------------------------------------------------- MQTT publish


def mqtt_publish(ctx: Ctx, *, qos: int, tls: bool = False, batched: bool = False) -> list[Row]:
    """QoS 0 or QoS 1 writes/s (ack latency), server CPU per message, at 1, 100, 1000 devices;
    one PUBLISH per record unless `batched`."""
    name = f"mqtt_qos{qos}" + ("_tls" if tls else "") + ("_batched" if batched else "")
    loads = [1, 4] if ctx.smoke else ctx.scaled([1, 100, 1000], [1, 100, 1000])
    # QoS 0 stores nothing (mosquitto-persist = mosquitto); --quick also leaves it out (no
    # target reads it) to stay near 10 minutes with four publish scenarios.
    skip = "mosquitto-persist" if qos == 0 or ctx.quick else ""
    targets = [(t, f) for t, f in _mqtt_targets() if t != skip]
    try:
        framing = record_framing(batched)
    except PeerUnavailable as exc:
        return [r for t, _f in targets for r in _skip(name, t, [str(n) for n in loads], str(exc))]
    rows: list[Row] = []
    for target, factory in targets:
        work = ctx.work / name / target
        try:
            with factory(work, tls) as srv:
                port, creds, topic, sni = _mqtt_endpoint(target, srv, tls, max(loads))
                for n in loads:
                    cfg = MqttLoad(
                        port=port,
                        connections=n,
                        qos=qos,
                        window=qos1_window(n),
                        duration=ctx.duration,
                        topic=topic,
                        tls=tls,
                        server_hostname=sni,
                        processes=1,
                        credentials=creds[:n] if creds else (),
                        drain_timeout=30.0,
                        **framing,
                    )
                    runs = [_publish_measured(srv, cfg) for _ in range(ctx.repeats)]
                    for r, _ in runs:
                        log.info("%s %s n=%d: %.0f msg/s %s", name, target, n, r.rate, r.errors)
                    rows += _rows_from_runs(name, target, str(n), runs, latency=qos == 1)
        except PeerUnavailable as exc:
            rows += _skip(name, target, [str(n) for n in loads], str(exc))
    return rows


# ------------------------------------------------------------------------- TLS handshakes


def tls_handshakes(ctx: Ctx) -> list[Row]:
    """TLS 1.3 handshake + MQTT CONNECT/CONNACK per second (64 in progress), and bench_tls.py."""
    name = "tls_connects"
    n = 300 if ctx.quick else 2000
    rows: list[Row] = []
    for target, factory in _mqtt_targets():
        if target == "mosquitto-persist":
            continue
        try:
            with factory(ctx.work / name / target, True) as srv:
                port, creds, _topic, sni = _mqtt_endpoint(target, srv, True, n)
                cfg = MqttLoad(
                    port=port,
                    connections=n,
                    tls=True,
                    server_hostname=sni,
                    connect_concurrency=64,
                    processes=1,
                    credentials=creds,
                )
                runs = []
                for _ in range(ctx.repeats):
                    r, cpu = _measured(srv, functools.partial(connect_storm, cfg))
                    r.acked, r.qos, r.elapsed = r.connections, 1, r.connect_seconds
                    runs.append((r, cpu))
                rows += _rows_from_runs(name, target, str(n), runs, latency=False)
        except PeerUnavailable as exc:
            rows += _skip(name, target, [str(n)], str(exc))
    script = Path("bench") / "bench_tls.py"  # relative to ROOT (the cwd below)
    if (ROOT / script).exists():
        text = (ROOT / script).read_text()
        cmd = (
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(script),
                "--benchmark-only",
            ]
            if "def test_" in text
            else [sys.executable, str(script)]
        )
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        rows.append(
            Row(
                "bench_tls",
                "bench_tls.py",
                "-",
                "exit",
                "",
                proc.returncode,
                [],
                f"`{' '.join(cmd[1:])}`\n```\n{tail}\n```",
            )
        )
    else:
        rows.append(
            Row(
                "bench_tls",
                "bench_tls.py",
                "-",
                "exit",
                "",
                None,
                [],
                "skipped: bench/bench_tls.py not present yet",
            )
        )
    return rows


# ------------------------------------------------------------------------- idle memory


def idle_memory(ctx: Ctx, *, tls: bool = False) -> list[Row]:
    """Server RSS per idle MQTT connection (10,000 and 19,000 connections), plain or TLS."""
    name = "idle_memory" + ("_tls" if tls else "")
    loads = ctx.scaled([10_000], [10_000, 19_000])
    rows: list[Row] = []
    for target, factory in _mqtt_targets(with_sink=False):
        if target == "mosquitto-persist":
            continue
        for n in loads:
            try:
                with factory(ctx.work / name / f"{target}-{n}", tls) as srv:
                    port, creds, _t, sni = _mqtt_endpoint(target, srv, tls, n)
                    time.sleep(0.5)
                    rss0 = srv.rss_bytes()
                    cfg = MqttLoad(
                        port=port,
                        connections=n,
                        credentials=creds,
                        tls=tls,
                        server_hostname=sni if tls else None,
                        processes=0,
                        connect_concurrency=256,
                        connect_timeout=120,
                    )
                    with LoadRun(cfg, "hold") as run:
                        time.sleep(1.0)
                        rss1 = srv.rss_bytes()
                        held = run.result.connections
                        errs = run.result.errors
                        run.release()
                note = f"{held} held, RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB"
                if errs:
                    note += f"; errors: {errs}"
                value = (rss1 - rss0) / held if held else None
                rows.append(
                    Row(
                        name,
                        target,
                        str(n),
                        "bytes_per_conn",
                        "B",
                        value,
                        [] if value is None else [round(value)],
                        note,
                    )
                )
            except PeerUnavailable as exc:
                rows += _skip(name, target, [str(n)], str(exc))
    return rows


# ------------------------------------------------------------------------- reconnect storm


def reconnect_storm(ctx: Ctx) -> list[Row]:
    """10,000 MQTT clients connect at the same instant: time to the last CONNACK + errors."""
    name = "reconnect_storm"
    n = 10_000
    rows: list[Row] = []
    for target, factory in _mqtt_targets(with_sink=False):
        if target == "mosquitto-persist":
            continue
        try:
            with factory(ctx.work / name / target, False) as srv:
                port, creds, _t, _s = _mqtt_endpoint(target, srv, False, n)
                cfg = MqttLoad(
                    port=port,
                    connections=n,
                    credentials=creds,
                    processes=2,
                    connect_concurrency=n,
                    connect_timeout=60,  # amqtt needs minutes; the cap is reported as errors
                )
                secs: list[float] = []
                errors: dict[str, int] = {}
                ok = []
                for _ in range(1 if ctx.quick else ctx.repeats):
                    r = connect_storm(cfg)
                    secs.append(r.connect_seconds)
                    ok.append(r.connections)
                    for k, v in r.errors.items():
                        errors[k] = errors.get(k, 0) + v
                    time.sleep(1.0)
                note = f"connected {ok} of {n}" + (f"; errors: {errors}" if errors else "")
                rows.append(
                    Row(
                        name,
                        target,
                        str(n),
                        "seconds",
                        "s",
                        _median(secs),
                        [round(s, 3) for s in secs],
                        note,
                    )
                )
                rows.append(
                    Row(name, target, str(n), "errors", "", float(sum(errors.values())), [], "")
                )
        except PeerUnavailable as exc:
            rows += _skip(name, target, [str(n)], str(exc))
    return rows


# ------------------------------------------------------------------------- control fan-out


def control_fanout(ctx: Ctx) -> list[Row]:
    """Set a value for N connected devices; time until every device got its PUBLISH.

    Gateway: one ``PATCH …/devices/{identity}/state`` per device (16 concurrent).
    mosquitto equivalent: N subscribers on their own topic, one publisher sends N publishes.
    """
    name = "control_fanout"
    n = 2_000 if ctx.quick else 10_000
    rows: list[Row] = []
    try:
        with peers.mosquitto(ctx.work / name / "mosquitto") as srv:
            cfg = MqttLoad(
                port=srv.ports["mqtt"],
                connections=n,
                subscribe_prefix="fan/",
                duration=60,
                processes=2,
            )
            secs = []
            for _ in range(ctx.repeats):
                blob = b"".join(wire.publish(f"fan/{i}", b"set-value") for i in range(n))
                with LoadRun(cfg, "receive") as run:
                    t0 = run.start()
                    with socket.create_connection(("127.0.0.1", srv.ports["mqtt"])) as pub:
                        pub.sendall(wire.connect("fanout-pub"))
                        pub.recv(4)
                        pub.sendall(blob)
                        got, complete, secs_to_last = run.collect_received(t0)
                    secs.append(secs_to_last)
                    note = f"{got} delivered to {complete} of {n}"
            rows.append(
                Row(
                    name,
                    "mosquitto",
                    str(n),
                    "seconds",
                    "s",
                    _median(secs),
                    [round(s, 3) for s in secs],
                    note,
                )
            )
    except PeerUnavailable as exc:
        rows += _skip(name, "mosquitto", [str(n)], str(exc))
    try:
        with peers.gateway(ctx.work / name / "gateway") as srv:
            port = srv.ports.get("dev_mqtt")
            if not port:
                raise PeerUnavailable(f"{gwclient.MQTT_UNAVAILABLE}: no dev_mqtt port")
            creds = tuple(gwclient.provision_many(srv, n, prefix="fan"))
            cid = srv.extra["connector"]
            cfg = MqttLoad(port=port, connections=n, credentials=creds, duration=120, processes=2)
            secs = []
            for rep in range(ctx.repeats):
                with LoadRun(cfg, "receive") as run:
                    t0 = run.start()

                    def patch(i: int, rep: int = rep) -> None:
                        gwclient.api(
                            srv,
                            "PATCH",
                            f"/connectors/{cid}/devices/fan{i:07d}/state",
                            {"config_io": f"v{rep}-{i}"},
                        )

                    with ThreadPoolExecutor(16) as pool:
                        list(pool.map(patch, range(n)))
                    got, complete, secs_to_last = run.collect_received(t0)
                secs.append(secs_to_last)
                note = f"{got} delivered to {complete} of {n}"
            rows.append(
                Row(
                    name,
                    "gateway",
                    str(n),
                    "seconds",
                    "s",
                    _median(secs),
                    [round(s, 3) for s in secs],
                    note,
                )
            )
    except PeerUnavailable as exc:
        rows += _skip(name, "gateway", [str(n)], str(exc))
    return rows


# ------------------------------------------------------------------------- management listing


def mgmt_listing(ctx: Ctx) -> list[Row]:
    """List devices filtered by tag with 1,000,000 devices in the connector: p50/p99 latency.

    Devices are whitelisted by CSV import (header ``ID,tag:bench``) in 100,000-row batches;
    one device in 1,000 carries ``bench=sel``, the rest ``bench=other``.  The first page of
    ``GET …/devices?tag=bench:sel&limit=100`` is timed; every returned device must carry the
    tag, or the scenario reports that the filter was not honoured instead of a number.
    """
    name = "mgmt_listing"
    n = 100_000 if ctx.quick else 1_000_000
    every = 1000
    try:
        with peers.gateway(ctx.work / name / "gateway") as srv:
            cid = srv.extra["connector"]
            batch = 100_000
            t_import = time.monotonic()
            for start in range(0, n, batch):
                csv = "ID,tag:bench\n" + "".join(
                    f"L{i:08d},{'sel' if i % every == 0 else 'other'}\n"
                    for i in range(start, min(n, start + batch))
                )
                gwclient.api(
                    srv,
                    "POST",
                    f"/connectors/{cid}/devices/import",
                    raw=csv.encode(),
                    content_type="text/csv",
                )
            import_s = time.monotonic() - t_import
            tagged = {f"L{i:08d}" for i in range(0, n, every)}
            lat = []
            page: Any = None
            for _ in range(50 if ctx.quick else 200):
                t = time.perf_counter()
                page = gwclient.api(
                    srv, "GET", f"/connectors/{cid}/devices?tag=bench:sel&limit=100"
                )
                lat.append((time.perf_counter() - t) * 1e3)
            items = page.get("items", []) if isinstance(page, dict) else []
            if not items or any(d.get("identity") not in tagged for d in items):
                raise PeerUnavailable(f"{peers.GATEWAY_UNAVAILABLE}: tag filter not honoured")
            lat.sort()
            note = f"{n:,} devices imported in {import_s:.1f} s; page of {len(items)}"
            return [
                Row(name, "gateway", str(n), "p50", "ms", lat[len(lat) // 2], [], note),
                Row(name, "gateway", str(n), "p99", "ms", lat[int(len(lat) * 0.99)], []),
            ]
    except PeerUnavailable as exc:
        return _skip(name, "gateway", [str(n)], str(exc))


# ------------------------------------------------------------------------- long-poll memory


def _longpoll_request(host: str, token: str) -> bytes:
    return (
        f"GET /onep:v1/stack/alias?data_out HTTP/1.1\r\nHost: {host}\r\n"
        f"X-Exosite-CIK: {token}\r\nRequest-Timeout: 300000\r\n"
        "Accept: application/x-www-form-urlencoded; charset=utf-8\r\n\r\n"
    ).encode()


def longpoll_memory(ctx: Ctx) -> list[Row]:
    """Server RSS per waiting HTTP long-poll (1,000 devices, one poll each, dev plain port),
    then one value set per device wakes its poll (all must answer 200)."""
    name = "longpoll_memory"
    n = 1000
    rows: list[Row] = []
    try:
        with peers.gateway(ctx.work / name / "gateway") as srv:
            port = srv.ports.get("dev_http")
            if not port:
                raise PeerUnavailable(f"{peers.GATEWAY_UNAVAILABLE}: no dev HTTP port")
            creds = gwclient.provision_many(srv, n, prefix="lp")
            cid, dom = srv.extra["connector"], srv.extra["base_domain"]
            host = f"{cid}.devmode-m2.{dom}"
            time.sleep(0.5)
            rss0 = srv.rss_bytes()
            socks = []
            try:
                for c in creds:
                    s = socket.create_connection(("127.0.0.1", port), timeout=30)
                    s.sendall(_longpoll_request(host, c.password or ""))
                    socks.append(s)
                time.sleep(2.0)  # let every request reach its wait
                rss1 = srv.rss_bytes()
                woke = 0
                for i, s in enumerate(socks):
                    ident = f"lp{i:07d}"  # provision_many's identities
                    gwclient.api(
                        srv,
                        "PATCH",
                        f"/connectors/{cid}/devices/{ident}/state",
                        {"data_out": "wake"},
                    )
                    head = s.recv(4096)
                    woke += head.startswith(b"HTTP/1.1 200")
            finally:
                for s in socks:
                    s.close()
        per = (rss1 - rss0) / n
        note = f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB; {woke}/{n} woke with 200"
        rows.append(Row(name, "gateway", str(n), "bytes_per_conn", "B", per, [round(per)], note))
    except PeerUnavailable as exc:
        rows += _skip(name, "gateway", [str(n)], str(exc))
    return rows


SCENARIOS: dict[str, Callable[[Ctx], list[Row]]] = {
    "mqtt_qos0": lambda c: mqtt_publish(c, qos=0),
    "mqtt_qos0_tls": lambda c: mqtt_publish(c, qos=0, tls=True),
    "mqtt_qos1": lambda c: mqtt_publish(c, qos=1),
    "mqtt_qos1_tls": lambda c: mqtt_publish(c, qos=1, tls=True),
    "mqtt_qos0_batched": lambda c: mqtt_publish(c, qos=0, batched=True),
    "mqtt_qos0_tls_batched": lambda c: mqtt_publish(c, qos=0, tls=True, batched=True),
    "mqtt_qos1_batched": lambda c: mqtt_publish(c, qos=1, batched=True),
    "mqtt_qos1_tls_batched": lambda c: mqtt_publish(c, qos=1, tls=True, batched=True),
    "tls_connects": tls_handshakes,
    "idle_memory": idle_memory,
    "idle_memory_tls": lambda c: idle_memory(c, tls=True),
    "longpoll_memory": longpoll_memory,
    "reconnect_storm": reconnect_storm,
    "control_fanout": control_fanout,
    "mgmt_listing": mgmt_listing,
}


__all__ = ["SCENARIOS", "Ctx", "Row"]
