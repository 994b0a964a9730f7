"""Disk full (docs/reliability.md section 10): a gateway on a filesystem of its own that
fills up while devices write.

The probe mounts a small tmpfs (``mount -t tmpfs``: root only), puts a fresh gateway's data
directory on it, and drives the gateway through real sockets from its own source addresses,
so that the live debug log can be filtered on them.  The gateway is ``gateway serve`` as
shipped (a node of processes, ``--workers auto``) or, with ``workers="1"``, one process:
the refusals then cross the node's bus from the store owner to the worker that serves the
device.

1. **Filling.**  An HTTP device (plain dev port) and an MQTT device (QoS 1) write numbered
   values while a filler file takes the rest of the space.  Each write is acknowledged
   (``204``, PUBACK) or refused (``507``; no PUBACK and the connection ended); the refusals'
   debug records must say ``disk_full``.  A management write must answer
   ``507 storage_full``, and content uploads (device and management) ``507`` with no file
   left behind.  In a node the store owner is then killed (SIGKILL) on the full disk: the
   supervisor's restart must serve again (the management API, a device read, writes
   refused ``507``) while the workers keep their devices.
2. **Restart on the full disk**, twice: once stopped while full (SQLite's ``-wal`` and
   ``-shm`` files stay), once stopped after space came back for a moment so that the clean
   close removed them, then filled again (opening then needs the space reserve).  Each time
   the gateway must serve (health, a device read of the last acknowledged value) and refuse
   writes the same way, without a traceback (``run.json`` cannot be written then: the
   gateway logs a warning and writes it when space is back).
3. **Space returns**: the filler is deleted and writes must succeed again without a restart
   (the resume latency is from the delete to the first ``204``); ``run.json`` appears and
   the space reserve is made again.
4. **Nothing acknowledged lost**: after a stop, every acknowledged value is in the event
   log and SQLite's integrity check says ok.
5. **A first start on the full disk** (an empty data directory) ends with one line
   (``error: cannot start: ...``, exit status 1) and leaves no partial file.
6. **A start that cannot open its database**: the cleanly stopped data directory without
   its space reserve (as an earlier release left it) on the full disk ends with one line
   naming the database, exit status 1 — in a node the store owner's line, passed on by the
   supervisor.

Resource handling: every gateway process is ended and the filesystem unmounted (lazily if
still busy) when :func:`probe_disk_full` returns or raises.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import msgspec
import trio

from gateway.app import RunInfo
from gateway.store.api import EventQuery
from gateway.store.sqlite import SqliteReader, integrity_check
from gateway.testing import mqtt_bytes as mb
from gateway.testing.node import read_run_json
from gateway.testing.ports import free_ports
from gateway.testing.probes import wire
from gateway.testing.probes.target import DebugTail, open_debug_tail

__all__ = [
    "DiskFullResult",
    "OwnerRestart",
    "Restart",
    "fill_filesystem",
    "mount_unavailable",
    "probe_disk_full",
    "small_filesystem",
    "summary",
]

SMALL_FS_BYTES = 16 * 1024 * 1024  # the filesystem the probe makes: a fresh gateway needs ~1 MB
HTTP_SOURCE = "127.0.0.5"  # the HTTP device's source address (its debug records)
MQTT_SOURCE = "127.0.0.6"  # the MQTT device's
UPLOAD_BYTES = 64 * 1024  # the content uploads tried on the full disk
REFUSALS_WANTED = 5  # refused writes per protocol before the probe moves on
RESTART_WRITES = 50  # at most this many writes per protocol after a restart on a full disk
START_TIMEOUT_S = 60.0  # a gateway start (the first one makes the development PKI)
ANSWER_TIMEOUT_S = 10.0  # one write's answer
FILL_TIMEOUT_S = 30.0  # until both devices have seen REFUSALS_WANTED refusals
RESUME_TIMEOUT_S = 10.0  # from freeing space to the first acknowledged write
RUN_JSON_TIMEOUT_S = 15.0  # run.json is retried every 5 s (gateway/app.py, the supervisor)
OWNER_BACK_TIMEOUT_S = 30.0  # a killed store owner serving again (restarted at once)
CONNECTOR = "demo"


class Restart(msgspec.Struct):
    """One start on the full disk."""

    case: str  # "stopped while full" / "-shm removed by a clean stop, then filled"
    shm_left: bool  # SQLite's -shm file was there when the gateway started
    started_s: float  # from the start of the process to the health check's 200
    read_ok: bool  # the HTTP device read its last acknowledged value
    http_refused: int  # writes answered 507 (of those tried)
    http_acked: int
    mqtt_refused: int
    mqtt_acked: int
    run_json_written: bool  # run.json present while the disk was full (on tmpfs it is not)


class OwnerRestart(msgspec.Struct):
    """The store owner of a node killed on the full disk and restarted by the supervisor."""

    back_s: float  # from the SIGKILL to a device write answered 507 through a worker
    read_ok: bool  # a device read of the last acknowledged value (from a worker)
    mgmt_ok: bool  # the management API (the new owner's) answered the health check


class DiskFullResult(msgspec.Struct):
    """What the probe saw; ``problems`` lists every property that did not hold."""

    workers: str = "auto"  # gateway serve --workers
    node: bool = False  # a node of processes served (run.json listed them)
    http_acked: int = 0  # writes answered 204, over the whole probe
    http_refused: int = 0  # writes answered 507
    mqtt_acked: int = 0  # QoS 1 publishes answered by their PUBACK
    mqtt_refused: int = 0  # publishes left without PUBACK (connection ended)
    http_reason: str | None = None  # the debug reason of a refused HTTP write
    mqtt_reason: str | None = None  # the debug reason of the MQTT disconnect
    mgmt_answer: str = ""  # status and error code of a management write on the full disk
    upload_answers: list[int] = msgspec.field(default_factory=list)  # device, management
    files_left: list[str] = msgspec.field(default_factory=list)  # by failed uploads
    restarts: list[Restart] = msgspec.field(default_factory=list)
    owner_restart: OwnerRestart | None = None  # a node only
    resume_ms: float | None = None  # from freeing space to the first 204
    run_json_s: float | None = None  # from freeing space to run.json on disk
    reserve_back: bool = False
    missing: int = 0  # acknowledged values not found in the event log
    integrity: str = ""
    first_start_exit: int | None = None
    first_start_stderr: str = ""
    partial_files: list[str] = msgspec.field(default_factory=list)  # left by that start
    no_reserve_exit: int | None = None  # a start whose database cannot open (no reserve)
    no_reserve_stderr: str = ""
    tracebacks: int = 0  # in the gateway's log
    seconds: float = 0.0
    problems: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# -- the filesystem --------------------------------------------------------------------------


def mount_unavailable() -> str | None:
    """Why this process cannot make a small filesystem (None when it can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    return None


@contextmanager
def small_filesystem(where: Path, size: int = SMALL_FS_BYTES) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted on ``where`` (created) for the block; unmounted
    after it, lazily if something still holds it open."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_filesystem(path: Path) -> int:
    """Append zeros to ``path`` until the filesystem refuses even one byte; bytes added."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    added = 0
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            zeros = bytes(chunk)
            while True:
                try:
                    added += os.write(fd, zeros)
                except OSError:
                    break
    finally:
        os.close(fd)
    return added


# -- the gateway process ---------------------------------------------------------------------


class _Gateway:
    """``gateway serve`` on one data directory and fixed ports, restartable."""

    def __init__(self, data: Path, log_file: Path, workers: str) -> None:
        self.data = data
        self.log_file = log_file
        self.workers = workers
        api, tls, mqtt_tls, http, mqtt = free_ports(5)
        self.ports = {"api": api, "tls": tls, "mqtt_tls": mqtt_tls, "http": http, "mqtt": mqtt}
        self.proc: trio.Process | None = None

    def command(self) -> list[str]:
        p = self.ports
        return [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--data",
            str(self.data),
            "--host",
            "127.0.0.1",
            "--api-port",
            str(p["api"]),
            "--tls-port",
            str(p["tls"]),
            "--mqtt-tls-port",
            str(p["mqtt_tls"]),
            "--dev",
            "--dev-http-port",
            str(p["http"]),
            "--dev-mqtt-port",
            str(p["mqtt"]),
            "--log-level",
            "INFO",
            "--workers",
            self.workers,
        ]

    async def start(self) -> float:
        """Start and wait for the management API's health check; seconds it took."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        t0 = time.monotonic()
        with self.log_file.open("ab") as log:
            self.proc = proc = await trio.lowlevel.open_process(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        async with httpx.AsyncClient(timeout=2.0) as client:
            with trio.fail_after(START_TIMEOUT_S):
                while not await self.healthy(client):
                    if proc.poll() is not None:
                        tail = self.log_file.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"gateway exited with {proc.returncode}: {tail}")
                    await trio.sleep(0.05)
        return time.monotonic() - t0

    async def run_info(self) -> RunInfo:
        """This start's ``run.json`` (a node's supervisor writes it once every process is
        ready, after the management API already answers); only while the disk has room."""
        assert self.proc is not None
        with trio.fail_after(START_TIMEOUT_S):
            while True:
                info = read_run_json(self.data)
                if info is not None and info.pid == self.proc.pid:
                    return info
                await trio.sleep(0.05)

    async def healthy(self, client: httpx.AsyncClient) -> bool:
        try:
            resp = await client.get(f"{self.api}/api/v1/health")
        except httpx.TransportError:
            return False
        return resp.status_code == 200

    async def stop(self) -> int | None:
        """SIGTERM and wait (a clean stop; killed after 30 s); the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(30):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
            await proc.wait()
        return proc.returncode

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def admin(self) -> httpx.AsyncClient:
        token = (self.data / "admin.token").read_text().strip()
        return httpx.AsyncClient(
            base_url=self.api, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )


# -- the devices -----------------------------------------------------------------------------


class _HttpDevice:
    """Writes and reads ``data_in`` over the plain dev port from ``HTTP_SOURCE``."""

    def __init__(self, gw: _Gateway, token: str) -> None:
        self.token = token
        transport = httpx.AsyncHTTPTransport(local_address=HTTP_SOURCE)
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gw.ports['http']}",
            transport=transport,
            timeout=ANSWER_TIMEOUT_S,
            headers={"Host": f"{CONNECTOR}.devmode-m2.localhost", "X-Exosite-CIK": token},
        )
        self.acked: list[str] = []
        self.refused = 0
        self.other: list[str] = []  # answers that are neither 204 nor 507

    async def write(self, value: str) -> int:
        try:
            resp = await self.client.post(
                "/onep:v1/stack/alias",
                content=f"data_in={value}".encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
        except httpx.TransportError as exc:
            self.other.append(f"{value}: {exc!r}")
            return 0
        if resp.status_code == 204:
            self.acked.append(value)
        elif resp.status_code == 507:
            self.refused += 1
        else:
            self.other.append(f"{value}: {resp.status_code} {resp.text[:100]!r}")
        return resp.status_code

    async def read(self) -> str | None:
        resp = await self.client.get("/onep:v1/stack/alias", params={"data_in": ""})
        if resp.status_code != 200:
            return None
        return resp.text.partition("=")[2]

    async def upload(self) -> int:
        resp = await self.client.post(
            "/provision/upload",
            params={"id": "firmware.bin"},
            content=bytes(UPLOAD_BYTES),
            headers={"Content-Type": "application/octet-stream"},
        )
        return resp.status_code


class _MqttDevice:
    """Publishes ``$resource/data_in`` at QoS 1 over the plain dev port from
    ``MQTT_SOURCE``; a publish left without PUBACK ends the connection (the gateway closes
    it) and the next one connects again, as a device would."""

    def __init__(self, gw: _Gateway, token: str) -> None:
        self.port = gw.ports["mqtt"]
        self.token = token
        self.stream: trio.SocketStream | None = None
        self.mid = 0
        self.acked: list[str] = []
        self.refused = 0

    async def write(self, value: str) -> bool:
        if self.stream is None:
            stream = await wire.open_plain("127.0.0.1", self.port, local=MQTT_SOURCE)
            await stream.send_all(mb.gen_connect(f"df-{value}", username="", password=self.token))
            connack = await wire.read_exactly(stream, 4, timeout=ANSWER_TIMEOUT_S)
            if connack != mb.gen_connack(0):
                await stream.aclose()
                self.refused += 1
                return False
            self.stream = stream
        self.mid = self.mid % 65535 + 1
        try:
            await self.stream.send_all(
                mb.gen_publish("$resource/data_in", value, qos=1, mid=self.mid)
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            got = b""
        else:
            got = await wire.read_exactly(self.stream, 4, timeout=ANSWER_TIMEOUT_S)
        if got == mb.gen_puback(self.mid):
            self.acked.append(value)
            return True
        self.refused += 1
        await self.close()
        return False

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


async def _reason(tail: DebugTail, event: str, *, timeout: float = 5.0) -> str | None:
    """The reason of the first ``event`` record of the tail (waiting up to ``timeout``)."""
    tail.drain()
    for rec in tail.seen:
        if rec.get("event") == event:
            return str(rec.get("reason"))
    found = await tail.wait_for((event,), timeout=timeout)
    return None if found is None else str(found.get("reason"))


# -- the probe -------------------------------------------------------------------------------


async def _write_until_refused(
    device: _HttpDevice | _MqttDevice, prefix: str, counter: list[int], *, wanted: int
) -> None:
    """Write numbered values until ``wanted`` more have been refused."""
    goal = device.refused + wanted
    while device.refused < goal:
        counter[0] += 1
        await device.write(f"{prefix}{counter[0]}")


def _stored_values(db: Path) -> tuple[set[str], str]:
    """Every ``data_in`` value in the event log, and SQLite's integrity check (last: its
    connection, closing, leaves no ``-wal`` or ``-shm``, as the gateway's clean stop did;
    step 6 needs that)."""
    reader = SqliteReader(db)
    values: set[str] = set()
    try:
        after = 0
        while page := reader.events(EventQuery(CONNECTOR, after, 1000, types=("data_in",))):
            after = page[-1].seq
            values.update(
                str(entry["values"]["data_in"])
                for event in page
                for entry in event.payload
                if "data_in" in entry["values"]
            )
    finally:
        reader.close()
    return values, integrity_check(db)


async def _restart_on_full_disk(
    gw: _Gateway,
    http: _HttpDevice,
    mqtt: _MqttDevice,
    counter: list[int],
    case: str,
    res: DiskFullResult,
) -> None:
    shm_left = (gw.data / "gateway.db-shm").exists()
    started = await gw.start()
    last = http.acked[-1] if http.acked else None
    read = await http.read()
    before_http, before_acked = http.refused, len(http.acked)
    before_mqtt, before_mqtt_acked = mqtt.refused, len(mqtt.acked)
    await mqtt.close()  # the old connection died with the old process
    # until the first refusal each: a filesystem may free a little space of its own (ext4
    # returns delayed-allocation reservations after writeback), so a write may still fit
    for device, prefix, refused in ((http, "h", before_http), (mqtt, "m", before_mqtt)):
        for _ in range(RESTART_WRITES):
            if device.refused > refused:
                break
            counter[0] += 1
            await device.write(f"{prefix}{counter[0]}")
    restart = Restart(
        case=case,
        shm_left=shm_left,
        started_s=round(started, 2),
        read_ok=read is not None and read == last,
        http_refused=http.refused - before_http,
        http_acked=len(http.acked) - before_acked,
        mqtt_refused=mqtt.refused - before_mqtt,
        mqtt_acked=len(mqtt.acked) - before_mqtt_acked,
        run_json_written=(gw.data / "run.json").exists(),
    )
    res.restarts.append(restart)
    if not restart.read_ok:
        res.problems.append(f"{case}: the device read {read!r}, expected {last!r}")
    if restart.http_refused == 0 or restart.mqtt_refused == 0:
        res.problems.append(f"{case}: writes were not refused on the full disk")


async def _run_start(cmd: list[str]) -> subprocess.CompletedProcess[bytes] | None:
    """A start that must end by itself; None (and the process stopped) if it still runs
    after ``START_TIMEOUT_S``."""
    with trio.move_on_after(START_TIMEOUT_S):
        return await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    return None


async def _first_start_on_full_disk(gw: _Gateway, res: DiskFullResult) -> None:
    """An empty data directory on the full disk: one line, exit 1, nothing half-written."""
    data = gw.data.parent / "fresh"
    data.mkdir(mode=0o700)
    fill_filesystem(gw.data.parent / "filler-2")
    fresh = _Gateway(data, gw.log_file, gw.workers)
    cmd = fresh.command()
    proc = await _run_start(cmd)
    if proc is None:
        res.problems.append(f"first start on the full disk: serving after {START_TIMEOUT_S} s")
        return
    res.first_start_exit = proc.returncode
    res.first_start_stderr = proc.stderr.decode(errors="replace").strip()
    lines = res.first_start_stderr.splitlines()
    if proc.returncode != 1 or len(lines) != 1 or not lines[0].startswith("error: cannot start"):
        res.problems.append(f"first start on the full disk: exit {proc.returncode}, {lines!r}")
    for path in data.rglob("*"):
        if path.is_dir():
            continue
        name = str(path.relative_to(data))
        # empty by design: the database SQLite had not begun, the data directory's lock
        empty_secret = path.stat().st_size == 0 and path.name not in ("gateway.db", "gateway.lock")
        if path.name.endswith(".tmp") or path.name.startswith(".") or empty_secret:
            res.partial_files.append(name)
    if res.partial_files:
        res.problems.append(f"first start left partial files: {res.partial_files}")


async def _start_without_reserve(gw: _Gateway, res: DiskFullResult) -> None:
    """The data directory of the scenario (stopped cleanly with space: no ``-shm``) without
    its space reserve, on the full disk: one line naming the database, exit 1.  At log level
    WARNING, so that the line is all an operator sees (INFO adds the node's start lines)."""
    (gw.data / "gateway.db-reserve").unlink(missing_ok=True)
    await trio.to_thread.run_sync(fill_filesystem, gw.data.parent / "filler-3")
    if (gw.data / "gateway.db-shm").exists():
        res.problems.append("start without the reserve: gateway.db-shm is there (not tested)")
    cmd = gw.command()
    cmd[cmd.index("--log-level") + 1] = "WARNING"
    proc = await _run_start(cmd)
    if proc is None:
        res.problems.append(f"start without the reserve: serving after {START_TIMEOUT_S} s")
        return
    res.no_reserve_exit = proc.returncode
    res.no_reserve_stderr = proc.stderr.decode(errors="replace").strip()
    lines = res.no_reserve_stderr.splitlines()
    wanted = "error: cannot start: cannot open the database"
    if proc.returncode != 1 or len(lines) != 1 or not lines[0].startswith(wanted):
        res.problems.append(f"start without the reserve: exit {proc.returncode}, {lines!r}")


async def probe_disk_full(workdir: Path, workers: str = "auto") -> DiskFullResult:
    """Run the scenario of the module docstring with a small filesystem mounted under
    ``workdir`` (root only: see :func:`mount_unavailable`), against ``gateway serve
    --workers WORKERS`` (``auto``: the default node; ``1``: one process)."""
    res = DiskFullResult(workers=workers)
    t_start = time.monotonic()
    log_file = workdir / f"diskfull-gateway-{workers}.log"
    with small_filesystem(workdir / f"disk-{workers}") as disk:
        gw = _Gateway(disk / "data", log_file, workers)
        try:
            await _scenario(gw, disk, res)
            await _first_start_on_full_disk(gw, res)
            await _start_without_reserve(gw, res)
        finally:
            await gw.stop()
    log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
    res.tracebacks = log_text.count("Traceback")
    if res.tracebacks:
        res.problems.append(f"{res.tracebacks} tracebacks in the gateway's log")
    res.seconds = round(time.monotonic() - t_start, 1)
    return res


async def _scenario(gw: _Gateway, disk: Path, res: DiskFullResult) -> None:
    filler = disk / "filler"
    counter = [0]
    await gw.start()
    first = await gw.run_info()
    owner = next((p.pid for p in first.processes if p.role == "store"), None)
    res.node = owner is not None
    http_token, mqtt_token = secrets.token_hex(20), secrets.token_hex(20)
    async with gw.admin() as admin:
        for identity, token in (("df-http", http_token), ("df-mqtt", mqtt_token)):
            resp = await admin.post(
                f"/api/v1/connectors/{CONNECTOR}/devices",
                json={"identity": identity, "auth": {"type": "token", "key": token}},
            )
            resp.raise_for_status()
    http = _HttpDevice(gw, http_token)
    mqtt = _MqttDevice(gw, mqtt_token)
    try:
        # 1. writes while the disk fills
        for _ in range(10):
            counter[0] += 1
            await http.write(f"h{counter[0]}")
            await mqtt.write(f"m{counter[0]}")
        async with gw.admin() as admin:
            async with (
                open_debug_tail(admin, CONNECTOR, HTTP_SOURCE) as http_tail,
                open_debug_tail(admin, CONNECTOR, MQTT_SOURCE) as mqtt_tail,
            ):
                # both devices write while the filler takes the space, until refused
                with trio.move_on_after(FILL_TIMEOUT_S) as fill_scope:
                    async with trio.open_nursery() as nursery:
                        for device, prefix in ((http, "h"), (mqtt, "m")):
                            nursery.start_soon(
                                partial(_write_until_refused, wanted=REFUSALS_WANTED),
                                device,
                                prefix,
                                counter,
                            )
                        await trio.to_thread.run_sync(fill_filesystem, filler)
                if fill_scope.cancelled_caught:
                    res.problems.append("writes were not refused on the full disk")
                res.http_reason = await _reason(http_tail, "http_refused")
                res.mqtt_reason = await _reason(mqtt_tail, "disconnect")
            for what, reason in (("HTTP", res.http_reason), ("MQTT", res.mqtt_reason)):
                if reason != "disk_full":
                    res.problems.append(f"{what} refusal's debug reason: {reason!r}")
            resp = await admin.post(
                f"/api/v1/connectors/{CONNECTOR}/devices",
                json={"identity": "df-new", "auth": {"type": "token", "key": "x" * 40}},
            )
            code = resp.json().get("error") if resp.status_code >= 400 else None
            res.mgmt_answer = f"{resp.status_code} {code}"
            if res.mgmt_answer != "507 storage_full":
                res.problems.append(f"management write on the full disk: {res.mgmt_answer}")
            upload = await admin.post(
                f"/api/v1/connectors/{CONNECTOR}/content",
                params={"id": "firmware-2.bin"},
                content=bytes(UPLOAD_BYTES),
                headers={"Content-Type": "application/octet-stream"},
            )
        res.upload_answers = [await http.upload(), upload.status_code]
        if res.upload_answers != [507, 507]:
            res.problems.append(f"uploads on the full disk answered {res.upload_answers}")
        res.files_left = sorted(p.name for p in (gw.data / "content").iterdir())
        if res.files_left:
            res.problems.append(f"failed uploads left {res.files_left}")
        if owner is not None:
            await _owner_killed_on_full_disk(gw, owner, http, mqtt, counter, res)

        # 2a. stopped while full, started while full
        await gw.stop()
        await _restart_on_full_disk(gw, http, mqtt, counter, "stopped while full", res)
        # 2b. space back for a moment: the clean stop removes -wal and -shm; full again
        filler.unlink()
        await gw.stop()
        if (gw.data / "gateway.db-shm").exists():
            res.problems.append("the clean stop left gateway.db-shm (the case is not tested)")
        await trio.to_thread.run_sync(fill_filesystem, filler)
        await _restart_on_full_disk(gw, http, mqtt, counter, "-shm removed, then full", res)

        # 3. space returns: writes resume without a restart
        filler.unlink()
        freed = time.monotonic()
        with trio.move_on_after(RESUME_TIMEOUT_S):
            while True:
                counter[0] += 1
                if await http.write(f"h{counter[0]}") == 204:
                    res.resume_ms = round((time.monotonic() - freed) * 1000, 1)
                    break
        if res.resume_ms is None:
            res.problems.append("writes did not resume after space was freed")
        counter[0] += 1
        if not await mqtt.write(f"m{counter[0]}"):
            res.problems.append("MQTT writes did not resume after space was freed")
        with trio.move_on_after(RUN_JSON_TIMEOUT_S):
            while not (gw.data / "run.json").exists():  # noqa: ASYNC110 (another process's file)
                await trio.sleep(0.1)
            res.run_json_s = round(time.monotonic() - freed, 1)
        if res.run_json_s is None:
            res.problems.append("run.json was not written after space was freed")
        res.reserve_back = (gw.data / "gateway.db-reserve").exists()
        if not res.reserve_back:
            res.problems.append("the space reserve was not made again")
    finally:
        await mqtt.close()
        await http.client.aclose()
        await gw.stop()

    # 4. nothing acknowledged lost, the database intact
    values, res.integrity = _stored_values(gw.data / "gateway.db")
    acked = http.acked + mqtt.acked
    res.missing = sum(1 for v in acked if v not in values)
    res.http_acked, res.http_refused = len(http.acked), http.refused
    res.mqtt_acked, res.mqtt_refused = len(mqtt.acked), mqtt.refused
    if res.missing:
        res.problems.append(f"{res.missing} acknowledged values are not in the event log")
    if res.integrity != "ok":
        res.problems.append(f"integrity_check: {res.integrity}")
    if http.other:
        res.problems.append(f"HTTP answers neither 204 nor 507: {http.other[:3]}")


async def _owner_killed_on_full_disk(
    gw: _Gateway,
    owner: int,
    http: _HttpDevice,
    mqtt: _MqttDevice,
    counter: list[int],
    res: DiskFullResult,
) -> None:
    """SIGKILL the node's store owner while the disk is full; the supervisor restarts it
    at once, and it must open its database and serve: the management API, a device read
    through a worker, and writes refused ``507`` (not ``503``: the owner is back)."""
    last = http.acked[-1] if http.acked else None
    t0 = time.monotonic()
    os.kill(owner, signal.SIGKILL)
    back_s = None
    answer = 0
    mgmt_ok = False
    async with httpx.AsyncClient(timeout=2.0) as client:
        with trio.move_on_after(OWNER_BACK_TIMEOUT_S):
            while not await gw.healthy(client):  # noqa: ASYNC110 (another process)
                await trio.sleep(0.05)
            # the workers reconnect to the new owner: until then a write is 503, unstored
            while True:
                counter[0] += 1
                answer = await http.write(f"h{counter[0]}")
                if answer != 503:
                    break
                http.other.pop()  # expected while the owner restarts
                await trio.sleep(0.05)
            back_s = time.monotonic() - t0
    read = await http.read()
    async with httpx.AsyncClient(timeout=2.0) as client:
        mgmt_ok = await gw.healthy(client)
    if back_s is None:
        res.problems.append(
            f"the store owner killed on the full disk: not back in {OWNER_BACK_TIMEOUT_S} s"
        )
        return
    res.owner_restart = OwnerRestart(round(back_s, 2), read is not None and read == last, mgmt_ok)
    if not mgmt_ok:
        res.problems.append("after the store owner's restart the management API is down")
    if answer != 507:
        res.problems.append(
            f"after the store owner's restart on the full disk a write answered {answer}"
        )
    if not res.owner_restart.read_ok:
        res.problems.append(
            f"after the store owner's restart the device read {read!r}, expected {last!r}"
        )
    await mqtt.close()  # its session may have ended with the owner: write on a new one
    counter[0] += 1
    if await mqtt.write(f"m{counter[0]}"):
        res.problems.append("after the store owner's restart an MQTT write was acknowledged")


def summary(res: DiskFullResult) -> list[str]:
    """The probe's figures as lines (``scripts/probe diskfull`` prints them)."""
    lines = [
        f"disk full (--workers {res.workers}): HTTP writes {res.http_acked} acknowledged, "
        f"{res.http_refused} refused "
        f"(507, debug reason {res.http_reason}); MQTT QoS 1 {res.mqtt_acked} acknowledged, "
        f"{res.mqtt_refused} left without PUBACK (debug reason {res.mqtt_reason})",
        f"  management write {res.mgmt_answer}; uploads {res.upload_answers}, files left "
        f"{len(res.files_left)}",
    ]
    lines.extend(
        f"  restart on the full disk ({r.case}; -shm there: {r.shm_left}): serving after "
        f"{r.started_s} s, device read {'ok' if r.read_ok else 'WRONG'}, writes refused "
        f"HTTP {r.http_refused}/{r.http_refused + r.http_acked} MQTT "
        f"{r.mqtt_refused}/{r.mqtt_refused + r.mqtt_acked} (until the first refusal), "
        f"run.json {'written' if r.run_json_written else 'not written'}"
        for r in res.restarts
    )
    if res.owner_restart is not None:
        o = res.owner_restart
        lines.append(
            f"  store owner killed on the full disk: back (a write answered 507 through a "
            f"worker) after {o.back_s} s, device read {'ok' if o.read_ok else 'WRONG'}, "
            f"management API {'ok' if o.mgmt_ok else 'DOWN'}"
        )
    lines += [
        f"  space freed: first 204 after {res.resume_ms} ms, run.json after {res.run_json_s} s, "
        f"reserve back {res.reserve_back}",
        f"  acknowledged values missing {res.missing} of {res.http_acked + res.mqtt_acked}; "
        f"integrity_check {res.integrity}",
        f"  first start on the full disk: exit {res.first_start_exit}, "
        f"{json.dumps(res.first_start_stderr)}; partial files {len(res.partial_files)}",
        f"  start that cannot open its database (no reserve, full disk): exit "
        f"{res.no_reserve_exit}, {json.dumps(res.no_reserve_stderr)}",
        f"  tracebacks in the log {res.tracebacks}; {res.seconds} s; "
        f"{'holds' if res.ok else 'FAILS: ' + '; '.join(res.problems)}",
    ]
    return lines
