"""The gateway under probe, and the operator-side tools every probe shares.

A :class:`Target` is what a probe may use: the bound ports (from ``run.json``), the admin
token, the development CA, the base domain and — when the probe started the gateway with
:func:`spawn_gateway` — the process, its log file and its data directory.
:func:`find_gateway` builds one for a gateway someone else started (``--data DIR``).

:class:`DebugTail` follows the live debug log (``GET …/logs?kind=debug&ip=…``, Server-Sent
Events) filtered on the probe's own source address, so the records it sees are the ones the
probe's connections caused; :class:`Canary` is a well-behaved device that must still be
served after every attack.

Resource handling: the spawned process is terminated (then killed) when its context
exits; a tail's SSE stream lives exactly as long as its ``async with``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from gateway.testing import mqtt_bytes as mb
from gateway.testing.probes import wire

__all__ = [
    "CANARY_SOURCE",
    "QUICK_CONNECT_S",
    "QUICK_HANDSHAKE_S",
    "Canary",
    "DebugTail",
    "Limits",
    "Probed",
    "Target",
    "connector_limits",
    "find_gateway",
    "mgmt_client",
    "open_debug_tail",
    "spawn_gateway",
]

CANARY_SOURCE = "127.0.0.3"  # the canary's own source address: its records never mix in
START_TIMEOUT_S = 60.0  # a fresh data directory generates its CA and server key first
TAIL_TIMEOUT_S = 10.0
# The deadlines of the gateway the quick test suite probes (tests/probes): short, so that
# the idle-cut probes take seconds; scripts/probe measures the shipped 10 s and 5 s.
QUICK_HANDSHAKE_S = 1.0
QUICK_CONNECT_S = 0.5  # how long a probe waits for the debug record of one of its connections


class Target(msgspec.Struct, kw_only=True):
    """Handles for one running gateway (see the module docstring)."""

    host: str = "127.0.0.1"
    ports: dict[str, int]
    admin_token: str
    ca: str
    base_domain: str
    connector: str
    pid: int | None = None
    data_dir: str | None = None
    log_file: str | None = None

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.ports['api']}"

    def fqdn(self, cid: str | None = None) -> str:
        return f"{cid or self.connector}.m2.{self.base_domain}"

    def devmode_fqdn(self, cid: str | None = None) -> str:
        return f"{cid or self.connector}.devmode-m2.{self.base_domain}"

    def alive(self) -> bool:
        """The process is up (True when we do not know its pid: the API answers for it)."""
        if self.pid is None:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _target_from_run_json(data: Path, *, log_file: Path | None) -> Target:
    info = json.loads((data / "run.json").read_text())
    token = Path(info["admin_token_file"]).read_text().strip()
    return Target(
        ports={k: int(v) for k, v in info["ports"].items()},
        admin_token=token,
        ca=info["ca"],
        base_domain=info["base_domain"],
        connector=info.get("demo_connector") or "demo",
        pid=int(info["pid"]),
        data_dir=str(data),
        log_file=None if log_file is None else str(log_file),
    )


def find_gateway(data: Path) -> Target:
    """The gateway running on ``data`` (its ``run.json`` and ``admin.token``)."""
    return _target_from_run_json(data, log_file=None)


@contextmanager
def spawn_gateway(
    data: Path,
    *,
    settings: Mapping[str, object] | None = None,
    log_level: str = "DEBUG",
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], Target]]:
    """Start ``gateway serve`` on ``data`` (ephemeral ports on 127.0.0.1, dev ports on) with
    its log in ``data/../gateway.log``; yield the process and its :class:`Target`.

    ``settings`` are GatewayConfig fields passed as ``GATEWAY_<NAME>`` variables (the
    documented configuration route), e.g. ``{"connect_timeout_s": 0.5}``.  ``command`` and
    ``cwd`` run another build (``[".venv/bin/python", "-m", "gateway"]`` in another checkout).
    """
    data.mkdir(parents=True, exist_ok=True)
    run_json = data / "run.json"
    run_json.unlink(missing_ok=True)
    log_file = data.parent / f"{data.name}.log"
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "tls_port": 0,
        "mqtt_tls_port": 0,
        "dev": True,
        "dev_http_port": 0,
        "dev_mqtt_port": 0,
        "api_port": 0,
        "log_level": log_level,
        **(settings or {}),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({f"GATEWAY_{k.upper()}": _env_value(v) for k, v in values.items()})
    cmd = [*(command or [sys.executable, "-m", "gateway"]), "serve", "--data", str(data)]
    with log_file.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not run_json.exists():
            if proc.poll() is not None:
                tail = log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"gateway exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError("gateway did not start in time")
            time.sleep(0.05)
        yield proc, _target_from_run_json(data, log_file=log_file)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def mgmt_client(target: Target, *, token: bool = True) -> httpx.AsyncClient:
    """An async client for the management API (with the admin token unless told not to)."""
    headers = {"Authorization": f"Bearer {target.admin_token}"} if token else {}
    return httpx.AsyncClient(base_url=target.api, headers=headers, timeout=30.0)


# -- the live debug log ----------------------------------------------------------------------


class DebugTail:
    """Debug records of one connector and source address, in arrival order."""

    def __init__(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self._receive = receive
        self.seen: list[dict[str, Any]] = []

    async def next_record(self, *, timeout: float = TAIL_TIMEOUT_S) -> dict[str, Any] | None:
        """The next record, or None if none comes within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            rec = await self._receive.receive()
            self.seen.append(rec)
            return rec
        return None

    async def wait_for(
        self, events: tuple[str, ...], *, timeout: float = TAIL_TIMEOUT_S
    ) -> dict[str, Any] | None:
        """The next record whose ``event`` is one of ``events`` (others are kept in
        ``seen`` and skipped), or None after ``timeout`` seconds."""
        deadline = trio.current_time() + timeout
        while True:
            left = deadline - trio.current_time()
            if left <= 0:
                return None
            rec = await self.next_record(timeout=left)
            if rec is None:
                return None
            if rec.get("event") in events:
                return rec

    def drain(self) -> list[dict[str, Any]]:
        """Take whatever has arrived without waiting."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                rec = self._receive.receive_nowait()
            except trio.WouldBlock:
                return out
            self.seen.append(rec)
            out.append(rec)


@asynccontextmanager
async def open_debug_tail(
    client: httpx.AsyncClient, cid: str, ip: str, *, kind: str = "debug"
) -> AsyncIterator[DebugTail]:
    """Follow ``cid``'s live log for records of source address ``ip``; returns once the
    subscription is open (the server's ``: stream open`` comment), so no later record is
    missed."""
    send, receive = trio.open_memory_channel[dict[str, Any]](100_000)
    opened = trio.Event()

    async def pump() -> None:
        params = {"kind": kind, "ip": ip, "heartbeat": "1"}
        async with client.stream(
            "GET", f"/api/v1/connectors/{cid}/logs", params=params, timeout=None
        ) as resp:
            resp.raise_for_status()
            event = ""
            async for line in resp.aiter_lines():
                if line.startswith(":"):
                    opened.set()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "log":
                    send.send_nowait(json.loads(line[6:]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        with trio.fail_after(TAIL_TIMEOUT_S):
            await opened.wait()
        try:
            yield DebugTail(receive)
        finally:
            nursery.cancel_scope.cancel()


class Probed(msgspec.Struct):
    """A spawned gateway and its canary's token, as a test fixture hands them out."""

    target: Target
    canary_token: str

    def canary(self) -> Canary:
        return Canary(self.target, self.canary_token)


# -- the canary ------------------------------------------------------------------------------


class Canary:
    """A token device of the target's demo connector that must be served after every
    attack: one QoS 1 PUBLISH answered by its PUBACK, one HTTP write answered ``204``.

    It connects from :data:`CANARY_SOURCE`, over the plain dev ports when they exist and
    over TLS otherwise.  Over MQTT it takes :data:`MQTT_IDENTITIES` identities in turn
    (``probe-canary``, ``probe-canary-1``...; tokens derived from the first): one identity
    reconnecting after every case would be banned as flapping (docs/decisions.md "Limits").
    """

    IDENTITY = "probe-canary"
    MQTT_IDENTITIES = 16
    _turns = itertools.count(1)  # shared: every case makes its own Canary

    def __init__(self, target: Target, token: str) -> None:
        self.target = target
        self.token = token
        self.served = 0
        self._mid = 0

    @classmethod
    def devices(cls, token: str) -> list[tuple[str, str]]:
        """(identity, token) of every canary identity."""
        return [(cls.IDENTITY, token)] + [
            (f"{cls.IDENTITY}-{i}", hashlib.sha1(f"{token}/{i}".encode()).hexdigest())
            for i in range(1, cls.MQTT_IDENTITIES)
        ]

    @classmethod
    async def create(cls, target: Target, client: httpx.AsyncClient) -> Canary:
        """(Re)create the canary device with a new token."""
        token = secrets.token_hex(20)
        cid = target.connector
        for identity, key in cls.devices(token):
            await client.delete(f"/api/v1/connectors/{cid}/devices/{identity}")
            resp = await client.post(
                f"/api/v1/connectors/{cid}/devices",
                json={"identity": identity, "auth": {"type": "token", "key": key}},
            )
            resp.raise_for_status()
        return cls(target, token)

    @classmethod
    def create_sync(cls, target: Target) -> Canary:
        """:meth:`create` outside a Trio run (for a module-scoped test fixture)."""
        token = secrets.token_hex(20)
        cid = target.connector
        headers = {"Authorization": f"Bearer {target.admin_token}"}
        with httpx.Client(base_url=target.api, headers=headers, timeout=30) as client:
            for identity, key in cls.devices(token):
                client.delete(f"/api/v1/connectors/{cid}/devices/{identity}")
                resp = client.post(
                    f"/api/v1/connectors/{cid}/devices",
                    json={"identity": identity, "auth": {"type": "token", "key": key}},
                )
                resp.raise_for_status()
        return cls(target, token)

    async def check(self, protocols: tuple[str, ...] = ("mqtt", "http")) -> None:
        """Raise ``AssertionError`` unless the canary is served over each of ``protocols``
        (both by default; the quick suites check the protocol under attack only)."""
        if "mqtt" in protocols:
            await self.check_mqtt()
        if "http" in protocols:
            await self.check_http()
        self.served += 1

    async def check_mqtt(self) -> None:
        t = self.target
        self._mid = self._mid % 65535 + 1
        _, token = self.devices(self.token)[next(Canary._turns) % self.MQTT_IDENTITIES]
        stream = await self._open("dev_mqtt", "mqtt_tls", alpn="mqtt")
        async with stream:
            await stream.send_all(
                mb.gen_connect("canary", username="", password=token)
                + mb.gen_publish("$resource/data_in", b"canary", qos=1, mid=self._mid)
            )
            want = mb.gen_connack(0) + mb.gen_puback(self._mid)
            got = await wire.read_exactly(stream, len(want), timeout=TAIL_TIMEOUT_S)
            if got != want:
                raise AssertionError(f"canary MQTT on {t.host}: {got!r}, expected {want!r}")
            await stream.send_all(mb.gen_disconnect())

    async def check_http(self) -> None:
        t = self.target
        host = t.devmode_fqdn() if "dev_http" in t.ports else t.fqdn()
        body = b"data_in=canary"
        stream = await self._open("dev_http", "tls", alpn="http/1.1")
        async with stream:
            await stream.send_all(
                b"POST /onep:v1/stack/alias HTTP/1.1\r\nHost: %s\r\nX-Exosite-CIK: %s\r\n"
                b"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (host.encode(), self.token.encode(), len(body), body)
            )
            answer = await wire.read_until_closed(stream, timeout=TAIL_TIMEOUT_S)
            if not answer.data.startswith(b"HTTP/1.1 204"):
                raise AssertionError(f"canary HTTP write: {answer.data[:200]!r}")

    async def _open(self, plain: str, tls: str, *, alpn: str) -> trio.abc.Stream:
        t = self.target
        if plain in t.ports:
            return await wire.open_plain(t.host, t.ports[plain], local=CANARY_SOURCE)
        return await wire.open_tls(
            t.host, t.ports[tls], t.fqdn(), wire.client_context(t.ca, alpn=[alpn]), CANARY_SOURCE
        )


class Limits(msgspec.Struct, frozen=True):
    """The size limits of a connector the catalogues depend on."""

    max_payload: int
    max_packet_size: int


async def connector_limits(client: httpx.AsyncClient, cid: str) -> Limits:
    """``limits`` of ``cid``'s settings, from the management API."""
    resp = await client.get(f"/api/v1/connectors/{cid}/settings")
    resp.raise_for_status()
    limits = resp.json()["limits"]
    return Limits(int(limits["max_payload"]), int(limits["max_packet_size"]))
