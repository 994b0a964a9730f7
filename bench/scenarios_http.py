"""HTTP device-write scenarios: wrk (HTTP/1.1, plain and TLS) and h2load (HTTP/2 over TLS).

``http_auth_tls`` compares the gateway with itself: writes by password devices against
writes by token devices in the same run (:func:`http_auth`).

Targets side by side in one run: nginx ``return 204`` (the generator's own ceiling: a C
server with no work), the bare hypercorn app, the bare uvicorn+httptools app and the gateway
(dev plain port / device TLS port, every answer a 204 after the commit).  The generators and
their identity scheme are described in bench/httpgen.py.  Rows: req/s, p50/p99 latency,
server CPU (cores) and server CPU per request (µs, the whole process tree from /proc).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from bench import gwclient, peers
from bench.httpgen import GeneratorMissing, HttpWrites, run_h2load, run_wrk
from bench.loadcfg import LoadResult
from bench.peers import PeerUnavailable, Server
from bench.scenarios import Ctx, Row, _rows_from_runs, _skip

log = logging.getLogger("bench")

# (connections, devices): the 32 connections / 16 devices (two keep-alive connections
# per device), and in plain HTTP device scale with one connection per device.  Over TLS wrk
# cannot run more devices (threads) without capping the server: httpgen.WRK_MAX_TLS_THREADS.
HTTP_LOADS = [(32, 16), (256, 256)]
HTTPS_LOADS = [(32, 16)]
H2_LOADS = [(32, 16)]  # one h2load process per device: more would measure process switching

Factory = Callable[[Path], AbstractContextManager[Server]]


def _targets(tls: bool, *, h2: bool) -> list[tuple[str, Factory]]:
    out: list[tuple[str, Factory]] = [
        ("nginx", peers.nginx_sink),
        ("hypercorn", lambda w: peers.hypercorn_bare(w, tls=tls)),
    ]
    if not h2:  # uvicorn speaks HTTP/1.1 only
        out.append(("uvicorn", lambda w: peers.uvicorn_bare(w, tls=tls)))
    out.append(("gateway", lambda w: peers.gateway(w)))
    return out


def _endpoint(target: str, srv: Server, tls: bool, devices: int) -> tuple[int, str, list[str]]:
    """(port, Host/SNI name, one token per device) of `target`."""
    if target == "nginx":
        return srv.ports["https" if tls else "http"], "localhost", []
    if target != "gateway":
        return srv.ports["http"], "localhost", []
    port = srv.ports.get("tls" if tls else "dev_http")
    if not port:
        raise PeerUnavailable(
            f"{peers.GATEWAY_UNAVAILABLE}: no {'tls' if tls else 'dev_http'} port"
        )
    tokens = [c.password or "" for c in gwclient.provision_many(srv, devices, prefix="http")]
    cid, dom = srv.extra["connector"], srv.extra["base_domain"]
    return port, (f"{cid}.m2.{dom}" if tls else f"{cid}.devmode-m2.{dom}"), tokens


def _measured(
    srv: Server, fn: Callable[[HttpWrites], tuple[LoadResult, str]], load: HttpWrites
) -> tuple[LoadResult, float, str]:
    """One generator run: (result, server CPU in cores over the run, command shown)."""
    c0, t0 = srv.cpu_seconds(), time.monotonic()
    res, cmd = fn(load)
    c1, t1 = srv.cpu_seconds(), time.monotonic()
    res.server_cpu_seconds = c1 - c0
    return res, (c1 - c0) / (t1 - t0), cmd


def http_writes(ctx: Ctx, *, tls: bool, h2: bool = False) -> list[Row]:
    """Device writes/s, latency and server CPU per request at each (connections, devices)."""
    name = "http2_writes_tls" if h2 else "http_writes" + ("_tls" if tls else "")
    loads = H2_LOADS if h2 else HTTPS_LOADS if tls else HTTP_LOADS
    if ctx.smoke:
        loads = [(4, 2)]
    run = run_h2load if h2 else run_wrk
    rows: list[Row] = []
    for target, factory in _targets(tls, h2=h2):
        labels = [str(c) for c, _d in loads]
        try:
            with factory(ctx.work / name / target) as srv:
                port, host, tokens = _endpoint(target, srv, tls, max(d for _c, d in loads))
                for conns, devices in loads:
                    load = HttpWrites(
                        port=port,
                        host=host,
                        connections=conns,
                        devices=devices,
                        duration=ctx.duration,
                        tls=tls,
                        tokens=tuple(tokens[:devices]),
                    )
                    runs, cmd = [], ""
                    for _ in range(ctx.repeats):
                        res, cores, cmd = _measured(srv, run, load)
                        log.info(
                            "%s %s c=%d: %.0f req/s %s", name, target, conns, res.rate, res.errors
                        )
                        runs.append((res, cores))
                    got = _rows_from_runs(name, target, str(conns), runs, latency=True)
                    got[0].note = "; ".join(
                        x for x in (f"{devices} devices", f"`{cmd}`", got[0].note) if x
                    )
                    rows += got
        except (PeerUnavailable, GeneratorMissing) as exc:
            rows += _skip(name, target, labels, str(exc))
    return rows


AUTH_PASSWORD = "correct-horse-battery-staple-"  # + the device index: 20+ characters


def _password_devices(srv: Server, devices: int) -> tuple[str, ...]:
    """``devices`` password devices added through the management API; their ``Authorization``
    values (HTTP Basic identity:password)."""
    cid = srv.extra["connector"]
    values = []
    for i in range(devices):
        identity, password = f"pw{i:07d}", f"{AUTH_PASSWORD}{i}"
        gwclient.api(
            srv,
            "POST",
            f"/connectors/{cid}/devices",
            {"identity": identity, "auth": {"type": "password", "key": password}},
        )
        values.append("Basic " + base64.b64encode(f"{identity}:{password}".encode()).decode())
    return tuple(values)


def http_auth(ctx: Ctx) -> list[Row]:
    """HTTP writes over TLS by password devices (HTTP Basic) against token devices
    (X-Exosite-CIK), one gateway, the same run: each repeat runs the token side then the
    password side.  Before measuring, each side runs one second unrecorded, so every
    password device has paid its one scrypt (gateway/services/devices/passwords.py) and the
    rows compare the steady state.  Target: password >= 0.8x token.  The same wrk load
    against nginx ``return 204`` (TLS) runs interleaved with both sides: the generator's
    ceiling beside the figures."""
    name = "http_auth_tls"
    conns, devices = (4, 2) if ctx.smoke else HTTPS_LOADS[0]
    loadavg = Path("/proc/loadavg").read_text().split(" ", 1)[0]
    rows: list[Row] = []
    try:
        with (
            peers.nginx_sink(ctx.work / name / "nginx") as sink,
            peers.gateway(ctx.work / name / "gateway") as srv,
        ):
            port, host, tokens = _endpoint("gateway", srv, True, devices)
            sides = {
                "token": HttpWrites(
                    port=port,
                    host=host,
                    connections=conns,
                    devices=devices,
                    duration=ctx.duration,
                    tls=True,
                    tokens=tuple(tokens[:devices]),
                ),
                "gateway": HttpWrites(
                    port=port,
                    host=host,
                    connections=conns,
                    devices=devices,
                    duration=ctx.duration,
                    tls=True,
                    tokens=_password_devices(srv, devices),
                    header="Authorization",
                ),
            }
            # The generator's ceiling in the same run: the same wrk load (threads,
            # connections, TLS) against nginx `return 204`, interleaved with the two sides.
            ceiling = replace(sides["token"], port=sink.ports["https"], host="localhost", tokens=())
            servers = {"nginx": sink, "token": srv, "gateway": srv}
            loads = {"nginx": ceiling, **sides}
            for load in sides.values():  # warm-up, not recorded
                run_wrk(replace(load, duration=1.0))
            runs: dict[str, list[tuple[LoadResult, float]]] = {k: [] for k in loads}
            cmds: dict[str, str] = {}
            for _ in range(ctx.repeats):
                for side, load in loads.items():
                    res, cores, cmds[side] = _measured(servers[side], run_wrk, load)
                    log.info("%s %s c=%d: %.0f req/s %s", name, side, conns, res.rate, res.errors)
                    runs[side].append((res, cores))
            for side, what in (
                ("nginx", "the generator's ceiling: the same wrk load against nginx"),
                ("token", "token devices"),
                ("gateway", "password devices"),
            ):
                got = _rows_from_runs(name, side, str(conns), runs[side], latency=True)
                got[0].note = "; ".join(
                    x
                    for x in (
                        f"{devices} {what}" if side != "nginx" else what,
                        f"`{cmds[side]}`",
                        f"1-minute load average {loadavg} at the start (shared machine)",
                        got[0].note,
                    )
                    if x
                )
                rows += got
    except (PeerUnavailable, GeneratorMissing) as exc:
        rows += _skip(name, "gateway", [str(conns)], str(exc))
    return rows


HTTP_SCENARIOS: dict[str, Callable[[Ctx], list[Row]]] = {
    "http_writes": lambda c: http_writes(c, tls=False),
    "http_writes_tls": lambda c: http_writes(c, tls=True),
    "http2_writes_tls": lambda c: http_writes(c, tls=True, h2=True),
    "http_auth_tls": http_auth,
}

__all__ = ["HTTP_SCENARIOS"]
