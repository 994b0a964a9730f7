"""Chaos under mixed load: SIGKILL the default node at random moments, check nothing is lost.

``python -m bench.chaos --kills 20 --seconds 300 --devices 1000 --rows 100000``
(``scripts/chaos``) starts ``gateway serve --workers auto --synchronous FULL`` on fixed
127.0.0.1 ports (picked free at start, kept across restarts so clients find the node again)
and runs, all at once:

* **MQTT QoS 1** from ``--devices`` devices on the plain dev port, spread over the source
  addresses 127.0.0.2… (``--sources``), one write in flight each, ``--rate`` per device per
  second (the device loop and its ledger are bench/chaos_workers.py's);
* **HTTP writes** (``POST /onep:v1/stack/alias``, one in flight) from ``devices / 50`` more
  devices (at least 2), a ``204`` counted as acknowledged;
* **management sets** (``PATCH …/devices/{identity}/state`` of ``config_io``) on those HTTP
  devices from two loops, a ``200`` counted as acknowledged (its ``data_out`` event is the
  stored proof);
* a **CSV import** of ``--rows`` new identities through the management API with an
  ``import_id`` (docs/decisions.md "A CSV import can be re-run after a crash"): whenever its
  answer is lost to a kill the same import is sent again once the node is back, until it
  answers.

Meanwhile ``--kills`` SIGKILLs land at random moments of ``--seconds`` (one per slot of
``seconds / kills``, never while the node is still recovering from the previous one).  The
target is the **supervisor** (the whole node: its children die with it by
``PR_SET_PDEATHSIG``; the script starts ``gateway serve`` again, as systemd would) half of the
time, a **worker** 30 % and the **store owner** 20 % (the supervisor replaces those two);
the first three kills cover the three kinds.  After each kill, once the node answers again:

* every write acknowledged so far (MQTT PUBACK, HTTP ``204``, management ``200``) is in the
  database (its ``data_in`` / ``data_out`` event; read incrementally by ``seq``);
* ``PRAGMA integrity_check`` is ``ok``;
* the import is all or nothing: its identities in the database number 0 or ``--rows``,
  none twice.

At the end the node is stopped with SIGTERM and the checks run once more on the closed
database, plus: the import completed (its answer ``created`` = ``--rows`` with no row
error, or a replay of it), sent once more it answers the same report as a replay, each of
its identities exists exactly once, one import record.
A rich table per kill and a JSON report (``--json``).  Only 127.0.0.x; every wait is under
a deadline; the kill phase ends after ``--seconds`` plus a grace even if kills remain.
The quick version is tests/node/test_chaos_mixed.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from rich.console import Console
from rich.table import Table

from bench.chaos_workers import _Device, _device, _provision, _Started
from gateway.app import RunInfo
from gateway.testing.node import read_run_json
from gateway.testing.ports import free_port as _free_port

__all__ = ["ChaosReport", "KillRecord", "main", "run_chaos"]

CONNECTOR = "demo"
KINDS = ("supervisor", "worker", "owner")
WEIGHTS = (0.5, 0.3, 0.2)
START_TIMEOUT_S = 120.0
RECOVER_TIMEOUT_S = 120.0
BACK_WINDOW_S = 60.0
IMPORT_ROWS_PER_S = 20_000.0  # a guess of the import's pace, for aiming the first kill
IMPORT_TIMEOUT_S = 900.0  # one import request (100k rows on a loaded machine)


@dataclass
class KillRecord:
    """One kill and what was checked once the node was back."""

    n: int
    at_s: float  # since the load started
    target: str  # supervisor | worker N | owner
    pid: int
    import_in_flight: bool
    api_back_s: float = 0.0  # kill → the management API answers
    broken: int = 0  # MQTT devices whose connection broke because of this kill
    devices_back_s: float | None = None  # kill → the last of those connected again
    not_back: int = 0  # broken and not connected again within BACK_WINDOW_S
    acked: int = 0  # writes acknowledged so far (MQTT + HTTP + sets)
    missing: int = 0
    integrity: str = ""
    import_devices: int = 0  # the import's identities in the database (0 or rows)
    import_duplicates: int = 0
    check_s: float = 0.0


@dataclass
class ChaosReport:
    command: str
    devices: int
    http_devices: int
    rows: int
    kills_planned: int
    seconds: float
    workers: int = 0  # what --workers auto chose
    kills: list[KillRecord] = field(default_factory=list)
    acked_mqtt: int = 0
    acked_http: int = 0
    acked_sets: int = 0
    missing: int = 0
    integrity: str = ""
    import_attempts: int = 0
    import_replayed: bool = False
    import_created: int = 0
    import_errors: int = 0
    import_devices: int = 0
    import_duplicates: int = 0
    import_records: int = 0
    import_resend_replayed: bool = False  # sent again once answered: the same report, replayed
    import_s: float = 0.0  # first send → the answer that completed it
    import_last_s: float = 0.0  # the attempt that was answered: send → answer
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def acked(self) -> int:
        return self.acked_mqtt + self.acked_http + self.acked_sets

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and self.missing == 0
            and self.integrity == "ok"
            and all(k.missing == 0 and k.integrity == "ok" and not k.not_back for k in self.kills)
            and all(k.import_devices in (0, self.rows) for k in self.kills)
            and self.import_devices == self.rows
            and self.import_duplicates == 0
            and self.import_created == self.rows
            and self.import_errors == 0
            and self.import_records == 1
            and self.import_resend_replayed
        )

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["acked"] = self.acked
        out["ok"] = self.ok
        return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class _Node:
    """``gateway serve --workers auto`` on fixed ports; started again after its supervisor
    is killed.  Its stderr goes to ``node.log`` (a pipe nobody drains would block it)."""

    def __init__(self, data: Path, work: Path) -> None:
        self.data = data
        self.ports = {
            name: _free_port() for name in ("tls", "mqtt_tls", "dev_http", "dev_mqtt", "api")
        }
        self.log = open(work / "node.log", "ab")  # noqa: SIM115 - closed by close()
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: RunInfo | None = None

    def command(self) -> list[str]:
        p = self.ports
        return [
            *(sys.executable, "-m", "gateway", "serve", "--data", str(self.data)),
            *("--host", "127.0.0.1", "--workers", "auto", "--synchronous", "FULL"),
            *("--tls-port", str(p["tls"]), "--mqtt-tls-port", str(p["mqtt_tls"])),
            *("--api-port", str(p["api"]), "--dev"),
            *("--dev-http-port", str(p["dev_http"]), "--dev-mqtt-port", str(p["dev_mqtt"])),
        ]

    async def start(self) -> None:
        (self.data / "run.json").unlink(missing_ok=True)
        # fork+exec does not block; the process is waited for in a thread (kill_supervisor)
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            self.command(), stdout=subprocess.DEVNULL, stderr=self.log
        )
        with trio.fail_after(START_TIMEOUT_S):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.proc.returncode}; see node.log")
                info = read_run_json(self.data)
                if info is not None and info.pid == self.proc.pid:
                    self.info = info
                    return
                await trio.sleep(0.05)

    def pids(self) -> dict[str, int]:
        info = read_run_json(self.data)
        if info is None:
            return {}
        out = {"supervisor": info.pid}
        for p in info.processes:
            out["owner" if p.role == "store" else f"worker {p.index}"] = p.pid
        return out

    async def kill_supervisor(self) -> int:
        """SIGKILL the supervisor, wait for its children to die with it, start again."""
        assert self.proc is not None
        pids = list(self.pids().values())
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        await trio.to_thread.run_sync(self.proc.wait)
        with trio.fail_after(30):
            while any(_alive(p) for p in pids):  # noqa: ASYNC110 - other processes' state
                await trio.sleep(0.02)
        await self.start()
        return pid

    async def kill_child(self, name: str) -> int:
        """SIGKILL one child (``owner`` or ``worker N``); return once the supervisor has
        started its replacement (``run.json`` shows a new pid)."""
        pid = self.pids()[name]
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(RECOVER_TIMEOUT_S):
            while self.pids().get(name) in (None, pid):  # noqa: ASYNC110 - run.json
                await trio.sleep(0.02)
        return pid

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await trio.to_thread.run_sync(self.proc.wait, 90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class _Ledger:
    """What was acknowledged (per kind) and what the database holds, read incrementally."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.http: list[tuple[str, str]] = []
        self.sets: list[tuple[str, str]] = []
        self.stored_in: set[tuple[str, str]] = set()
        self.stored_out: set[tuple[str, str]] = set()
        self.seq = 0

    def read(self, prefix: str, rows: int) -> tuple[str, int, int]:
        """Add the events committed since the last read; return integrity_check, the
        import's identities in the database and how many of them appear twice."""
        conn = sqlite3.connect(self.db, timeout=60)
        try:
            for seq, kind, identity, payload in conn.execute(
                "SELECT seq, type, identity, payload FROM events WHERE connector_id = ? "
                "AND seq > ? AND type IN ('data_in', 'data_out') ORDER BY seq",
                (CONNECTOR, self.seq),
            ):
                self.seq = seq
                into = self.stored_in if kind == "data_in" else self.stored_out
                for group in json.loads(payload):
                    for value in group["values"].values():
                        into.add((identity, str(value)))
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            hi = prefix + "\U0010ffff"
            (imported,) = conn.execute(
                "SELECT count(*) FROM devices WHERE connector_id = ? AND identity >= ? "
                "AND identity < ?",
                (CONNECTOR, prefix, hi),
            ).fetchone()
            (dups,) = conn.execute(
                "SELECT count(*) FROM (SELECT identity FROM devices WHERE connector_id = ? "
                "AND identity >= ? AND identity < ? GROUP BY identity HAVING count(*) > 1)",
                (CONNECTOR, prefix, hi),
            ).fetchone()
        finally:
            conn.close()
        return str(integrity), int(imported), int(dups)

    def import_records(self, import_id: str) -> int:
        conn = sqlite3.connect(self.db, timeout=60)
        try:
            (n,) = conn.execute(
                "SELECT count(*) FROM imports WHERE connector_id = ? AND import_id = ?",
                (CONNECTOR, import_id),
            ).fetchone()
        finally:
            conn.close()
        return int(n)

    def missing(self, mqtt: list[tuple[str, str]], http: int, sets: int) -> int:
        """Acknowledged writes not in the database: ``mqtt`` and the first ``http`` and
        ``sets`` entries of the ledger, all taken before the read (a write acknowledged
        after the read began may be missing from it without being lost)."""
        lost = sum(1 for w in mqtt if w not in self.stored_in)
        lost += sum(1 for w in self.http[:http] if w not in self.stored_in)
        return lost + sum(1 for w in self.sets[:sets] if w not in self.stored_out)


async def _http_device(
    d: _Device, port: int, host: str, local: str, ledger: _Ledger, stop: trio.Event
) -> None:
    """HTTP writes, one in flight; a ``204`` goes into the ledger.  A value whose answer was
    lost is never sent again (it may or may not be stored: not acknowledged)."""
    n = 0
    transport = httpx.AsyncHTTPTransport(local_address=local)
    headers = {"Host": host, "X-Exosite-CIK": d.token}
    async with httpx.AsyncClient(transport=transport, timeout=15) as client:
        while not stop.is_set():
            value = f"h{n}"
            n += 1
            try:
                r = await client.post(
                    f"http://127.0.0.1:{port}/onep:v1/stack/alias",
                    content=f"data_in={value}",
                    headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
                )
                if r.status_code == 204:
                    ledger.http.append((d.identity, value))
                    await trio.sleep(random.uniform(0.05, 0.15))
                    continue
            except httpx.HTTPError:
                pass
            await trio.sleep(random.uniform(0.2, 0.5))


async def _setter(
    api: str, headers: dict[str, str], targets: list[_Device], ledger: _Ledger, stop: trio.Event
) -> None:
    """Management sets of ``config_io``; a ``200`` goes into the ledger."""
    n = 0
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=15) as client:
        while not stop.is_set():
            d = random.choice(targets)
            value = f"s{random.getrandbits(32):x}{n}"
            n += 1
            try:
                r = await client.patch(
                    f"/connectors/{CONNECTOR}/devices/{d.identity}/state",
                    json={"config_io": value},
                )
                if r.status_code == 200:
                    ledger.sets.append((d.identity, value))
                    await trio.sleep(random.uniform(0.02, 0.1))
                    continue
            except httpx.HTTPError:
                pass
            await trio.sleep(random.uniform(0.2, 0.5))


@dataclass
class _Import:
    rows: int
    prefix: str
    import_id: str
    attempts: int = 0
    in_flight: bool = False
    report: dict[str, Any] | None = None
    resent: dict[str, Any] | None = None  # the answer to sending it once more, done
    started: float = 0.0
    last_sent: float = 0.0
    finished: float = 0.0
    done: trio.Event = field(default_factory=trio.Event)

    def csv(self) -> bytes:
        lines = ["ID", *(f"{self.prefix}{i:07d}" for i in range(self.rows))]
        return ("\n".join(lines) + "\n").encode()


async def _importer(api: str, headers: dict[str, str], imp: _Import, log: Any) -> None:
    """Send the import until it answers; a lost answer (the node killed) means: send the
    same import again once the management API answers."""
    body = imp.csv()
    imp.started = time.monotonic()
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=IMPORT_TIMEOUT_S) as c:
        while True:
            imp.attempts += 1
            imp.in_flight = True
            imp.last_sent = time.monotonic()
            try:
                r = await c.post(
                    f"/connectors/{CONNECTOR}/devices/import",
                    params={"import_id": imp.import_id},
                    content=body,
                    headers={"Content-Type": "text/csv"},
                )
            except httpx.HTTPError as exc:
                imp.in_flight = False
                log(f"chaos: import attempt {imp.attempts} lost its answer ({type(exc).__name__})")
                await _api_up(api, headers, RECOVER_TIMEOUT_S)
                continue
            imp.in_flight = False
            if r.status_code != 200:
                raise RuntimeError(f"import refused {r.status_code}: {r.text[:500]}")
            imp.report = r.json()
            imp.finished = time.monotonic()
            rep = imp.report
            log(
                f"chaos: import answered on attempt {imp.attempts}: created {rep['created']}, "
                f"{len(rep['errors'])} row errors, replayed {rep.get('replayed')}"
            )
            # a client that lost this answer would send the import again: it must answer
            # the same report without writing (docs/decisions.md "A CSV import can be re-run
            # after a crash")
            while True:
                try:
                    again = await c.post(
                        f"/connectors/{CONNECTOR}/devices/import",
                        params={"import_id": imp.import_id},
                        content=body,
                        headers={"Content-Type": "text/csv"},
                    )
                except httpx.HTTPError:
                    await _api_up(api, headers, RECOVER_TIMEOUT_S)
                    continue
                ok = again.status_code == 200
                imp.resent = again.json() if ok else {"status": again.status_code}
                break
            imp.done.set()
            return


async def _api_up(api: str, headers: dict[str, str], timeout: float) -> None:
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=5) as c:
        with trio.fail_after(timeout):
            while True:
                try:
                    r = await c.get(f"/connectors/{CONNECTOR}")
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.05)


def _plan(kills: int, rng: random.Random) -> list[str]:
    """Kill targets: the first three cover every kind, the first of them one that ends the
    import's request (the supervisor or the store owner, which serves the management API);
    then weighted by :data:`WEIGHTS`."""
    first = rng.choice(["supervisor", "owner"])
    rest = [k for k in KINDS if k != first]
    rng.shuffle(rest)
    return [first, *rest, *rng.choices(KINDS, WEIGHTS, k=max(0, kills - 3))][:kills]


def run_chaos(
    work: Path,
    *,
    devices: int = 1000,
    kills: int = 20,
    seconds: float = 300.0,
    rows: int = 100_000,
    rate: float = 0.5,
    sources: int = 50,
    seed: int | None = None,
    log: Any = print,
) -> ChaosReport:
    """Run the scenario of the module docstring in ``work`` (the data directory is
    ``work/data``, the node's stderr ``work/node.log``)."""
    rng = random.Random(seed)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    n_http = max(2, devices // 50)
    mqtt_fleet = [_Device(f"chaos{i:05d}", os.urandom(20).hex()) for i in range(devices)]
    http_fleet = [_Device(f"chaosh{i:04d}", os.urandom(20).hex()) for i in range(n_http)]
    locals_ = [f"127.0.0.{2 + i % 250}" for i in range(max(1, min(sources, 250)))]
    imp = _Import(rows, "imp", f"chaos-{rng.getrandbits(48):012x}")
    report = ChaosReport(
        command=" ".join(
            [
                "scripts/chaos",
                *(f"--kills {kills} --seconds {seconds:g} --devices {devices}".split()),
                *(f"--rows {rows} --rate {rate:g} --sources {sources}".split()),
                *([f"--seed {seed}"] if seed is not None else []),
            ]
        ),
        devices=devices,
        http_devices=n_http,
        rows=rows,
        kills_planned=kills,
        seconds=seconds,
    )
    ledger = _Ledger(data / "gateway.db")
    node = _Node(data, work)
    api = f"http://127.0.0.1:{node.ports['api']}/api/v1"
    t_begin = time.monotonic()
    kill_times: list[float] = []

    def mqtt_acked() -> list[tuple[str, str]]:
        return [(d.identity, str(n)) for d in mqtt_fleet for n in list(d.acked)]

    async def check(rec: KillRecord | None) -> tuple[str, int, int, int, int]:
        acked, n_http, n_sets = mqtt_acked(), len(ledger.http), len(ledger.sets)
        acked_total = len(acked) + n_http + n_sets
        integrity, imported, dups = await trio.to_thread.run_sync(ledger.read, imp.prefix, rows)
        missing = ledger.missing(acked, n_http, n_sets)
        if rec is not None:
            rec.acked, rec.missing, rec.integrity = acked_total, missing, integrity
            rec.import_devices, rec.import_duplicates = imported, dups
        return integrity, imported, dups, missing, acked_total

    async def main() -> None:
        await node.start()
        headers = {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}
        assert node.info is not None
        report.workers = node.info.workers
        host = f"{CONNECTOR}.devmode-m2.{node.info.base_domain}"
        await _provision(api, headers, mqtt_fleet + http_fleet)
        log(f"chaos: {devices} MQTT + {n_http} HTTP devices provisioned; load starts")
        stop = trio.Event()
        started = _Started(devices)
        async with trio.open_nursery() as nursery:
            for i, d in enumerate(mqtt_fleet):
                nursery.start_soon(
                    _device,
                    d,
                    node.ports["dev_mqtt"],
                    1.0 / rate,
                    stop,
                    started,
                    locals_[i % len(locals_)],
                )
            with trio.fail_after(120):
                await started.event.wait()
            log("chaos: every MQTT device connected")
            for i, d in enumerate(http_fleet):
                local = locals_[(devices + i) % len(locals_)]
                port = node.ports["dev_http"]
                nursery.start_soon(_http_device, d, port, host, local, ledger, stop)
            for _ in range(2):
                nursery.start_soon(_setter, api, headers, http_fleet, ledger, stop)
            t0 = time.monotonic()
            nursery.start_soon(_importer, api, headers, imp, log)
            slot = seconds / max(kills, 1)
            grace = seconds + 180.0
            for k, kind in enumerate(_plan(kills, rng)):
                now = time.monotonic()
                if now - t0 > grace:
                    report.problems.append(f"kill phase over time: {k} of {kills} kills done")
                    break
                if k == 0:
                    # the first kill aims at the import: a random moment of its expected
                    # run (before its commit: the re-run imports; after: it replays)
                    with trio.fail_after(60):
                        while not (imp.in_flight or imp.done.is_set()):  # noqa: ASYNC110
                            await trio.sleep(0.005)  # (a flag set just before the request)
                    await trio.sleep(rng.uniform(0.0, max(0.05, rows / IMPORT_ROWS_PER_S)))
                else:
                    at = t0 + k * slot + rng.uniform(0.1, 1.0) * slot
                    await trio.sleep(max(0.5, at - now))
                in_flight = imp.in_flight
                t_kill = time.monotonic()
                if kind == "supervisor":
                    target, pid = "supervisor", await node.kill_supervisor()
                else:
                    pids = node.pids()
                    names = [n for n in pids if n.startswith("worker")]
                    target = "owner" if kind == "owner" else rng.choice(sorted(names))
                    pid = await node.kill_child(target)
                rec = KillRecord(k + 1, round(t_kill - t0, 2), target, pid, in_flight)
                await _api_up(api, headers, RECOVER_TIMEOUT_S)
                rec.api_back_s = round(time.monotonic() - t_kill, 2)
                kill_times.append(t_kill)
                t_check = time.monotonic()
                await check(rec)
                rec.check_s = round(time.monotonic() - t_check, 2)
                report.kills.append(rec)
                log(
                    f"chaos: kill {k + 1}/{kills} {target} (pid {pid}) at {rec.at_s:.1f} s"
                    f"{' during the import' if in_flight else ''}: API back in "
                    f"{rec.api_back_s:.1f} s; "
                    f"{rec.acked} acknowledged, {rec.missing} missing; integrity "
                    f"{rec.integrity}; import devices {rec.import_devices}"
                )
            with trio.move_on_after(IMPORT_TIMEOUT_S) as waiting:
                await imp.done.wait()
            if waiting.cancelled_caught:
                report.problems.append("the import did not complete in time")
            await trio.sleep(2.0)  # a last few writes after the last kill
            stop.set()
        await node.stop()

    try:
        trio.run(main)
    finally:
        node.close()
    acked = mqtt_acked()
    report.acked_mqtt, report.acked_http, report.acked_sets = (
        len(acked),
        len(ledger.http),
        len(ledger.sets),
    )
    integrity, imported, dups = ledger.read(imp.prefix, rows)
    report.missing = ledger.missing(acked, len(ledger.http), len(ledger.sets))
    report.integrity, report.import_devices, report.import_duplicates = integrity, imported, dups
    report.import_records = ledger.import_records(imp.import_id)
    report.import_attempts = imp.attempts
    if imp.report is not None:
        report.import_created = int(imp.report["created"])
        report.import_errors = len(imp.report["errors"])
        report.import_replayed = bool(imp.report.get("replayed"))
        report.import_s = round(imp.finished - imp.started, 2)
        report.import_last_s = round(imp.finished - imp.last_sent, 2)
    if imp.report is not None and imp.resent is not None:
        first, again = imp.report, imp.resent
        report.import_resend_replayed = bool(again.get("replayed")) and all(
            again.get(k) == first[k] for k in ("total", "created", "errors")
        )
    _devices_back(report.kills, kill_times, mqtt_fleet)
    report.elapsed_s = round(time.monotonic() - t_begin, 1)
    return report


def _devices_back(kills: list[KillRecord], times: list[float], fleet: list[_Device]) -> None:
    """Attribute each MQTT break to the last kill before it (a break is noticed at the
    device's next write or when its PUBACK times out, so up to ``BACK_WINDOW_S`` later) and
    record, per kill, how many devices broke and when the last of them was back."""
    for d in fleet:
        for b in d.breaks:
            i = max((i for i, t in enumerate(times) if t <= b + 0.5), default=None)
            if i is None or b - times[i] > BACK_WINDOW_S:
                continue
            rec = kills[i]
            rec.broken += 1
            back = next((c for c in d.connects if c > b), None)
            if back is None or back - times[i] > BACK_WINDOW_S:
                rec.not_back += 1
            else:
                rec.devices_back_s = round(max(rec.devices_back_s or 0.0, back - times[i]), 2)


def render(report: ChaosReport, console: Console) -> None:
    """The per-kill table and the totals."""
    table = Table(title=f"chaos: {report.command}")
    for col in (
        "#",
        "at s",
        "killed",
        "import in flight",
        "API back s",
        "MQTT broken",
        "all back s",
        "acked",
        "missing",
        "integrity",
        "import devices",
    ):
        table.add_column(col, justify="right" if col not in ("killed", "integrity") else "left")
    for k in report.kills:
        table.add_row(
            str(k.n),
            f"{k.at_s:.1f}",
            k.target,
            "yes" if k.import_in_flight else "",
            f"{k.api_back_s:.1f}",
            f"{k.broken:,}" + (f" ({k.not_back} not back)" if k.not_back else ""),
            "-" if k.devices_back_s is None else f"{k.devices_back_s:.1f}",
            f"{k.acked:,}",
            str(k.missing),
            k.integrity,
            f"{k.import_devices:,}"
            + (f" ({k.import_duplicates} dup)" if k.import_duplicates else ""),
        )
    console.print(table)
    totals = Table(title="totals (after SIGTERM, on the closed database)", show_header=False)
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    kinds = {kind: sum(1 for k in report.kills if k.target.startswith(kind)) for kind in KINDS}
    rows = [
        (
            "kills (supervisor / worker / owner)",
            f"{len(report.kills)} ({kinds['supervisor']} / {kinds['worker']} / {kinds['owner']})",
        ),
        (
            "acknowledged MQTT QoS 1 / HTTP / management sets",
            f"{report.acked_mqtt:,} / {report.acked_http:,} / {report.acked_sets:,}",
        ),
        ("acknowledged writes missing", str(report.missing)),
        ("integrity_check", report.integrity),
        (
            "import: attempts / answered by a replay",
            f"{report.import_attempts} / {'yes' if report.import_replayed else 'no'}",
        ),
        ("import: created / row errors", f"{report.import_created:,} / {report.import_errors}"),
        (
            "import sent again once answered: the same report, replayed",
            "yes" if report.import_resend_replayed else "no",
        ),
        (
            "import: first send → completed / the answered attempt",
            f"{report.import_s:.1f} s / {report.import_last_s:.1f} s",
        ),
        (
            "import: identities in the database / duplicates / records",
            f"{report.import_devices:,} / {report.import_duplicates} / {report.import_records}",
        ),
        ("workers (--workers auto)", str(report.workers)),
        ("elapsed", f"{report.elapsed_s:.0f} s"),
        ("result", "[green]ok[/]" if report.ok else f"[red]FAILED[/] {report.problems}"),
    ]
    for name, value in rows:
        totals.add_row(name, value)
    console.print(totals)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seconds", type=float, default=300.0, help="length of the kill phase")
    p.add_argument("--devices", type=int, default=1000, help="MQTT QoS 1 devices")
    p.add_argument("--rows", type=int, default=100_000, help="rows of the CSV import")
    p.add_argument("--rate", type=float, default=0.5, help="QoS 1 writes per device per second")
    p.add_argument("--sources", type=int, default=50, help="source addresses 127.0.0.2…")
    p.add_argument("--seed", type=int, help="seed of the kill plan and moments")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--work", type=Path, help="keep the data directory and node.log here")
    args = p.parse_args(argv)
    if args.kills < 0 or args.seconds <= 0 or args.devices < 1 or args.rows < 1:
        p.error("--kills >= 0, --seconds > 0, --devices >= 1, --rows >= 1")
    console = Console()
    with contextlib.ExitStack() as stack:
        if args.work:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        report = run_chaos(
            work,
            devices=args.devices,
            kills=args.kills,
            seconds=args.seconds,
            rows=args.rows,
            rate=args.rate,
            sources=args.sources,
            seed=args.seed,
            log=console.print,
        )
    render(report, console)
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
