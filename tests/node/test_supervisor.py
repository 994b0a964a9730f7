"""The supervisor of ``gateway serve --workers N`` (gateway/node/supervisor.py): restarts,
crash-loop back-off, drain on SIGTERM, no orphans, the data directory's lock and one-line
start errors.  Every test runs its own node as a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from gateway.testing.node import pinned_to, read_run_json, tree_pids, wait_for, worker_pid
from gateway.testing.server import gateway_process
from gateway.tls.pki import fingerprint, issue_server_cert, server_names

from .conftest import Mqtt, Node


@pytest.fixture
def data(tmp_path: Path, pki_dir: Path, resolve: Callable[..., None]) -> Path:
    resolve("demo.m2.localhost")  # the HTTPS clients connect by the connector's name
    d = tmp_path / "data"
    shutil.copytree(pki_dir, d / "tls")
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pid_of(data: Path, role: str, index: int) -> int:
    info = read_run_json(data)
    if info is None:
        return 0
    return next((p.pid for p in info.processes if p.role == role and p.index == index), 0)


def test_a_killed_worker_is_replaced_and_the_port_stays_open(data: Path) -> None:
    with (
        ExitStack() as stack,
        gateway_process(data, dev=False, workers=2, timeout=60) as (proc, gw),
    ):
        node = stack.enter_context(Node(proc, gw, data))
        token = node.device("sv-1")
        old = worker_pid(gw.info, 1)
        os.kill(old, signal.SIGKILL)
        # the listening socket never closes: a connection made right now is served by the
        # other worker
        with node.https() as https:
            r = https.post(
                "/onep:v1/stack/alias", content=b"data_in=1", headers={"X-Exosite-CIK": token}
            )
            assert r.status_code == 204
        new = wait_for(lambda: (p := _pid_of(data, "worker", 1)) != old and p, 10, "a new worker")
        assert _alive(int(new))  # type: ignore[call-overload]
        info = read_run_json(data)
        assert info is not None
        assert next(p for p in info.processes if p.index == 1 and p.role == "worker").restarts == 1


def test_a_killed_store_owner_acknowledges_nothing_until_replaced(data: Path) -> None:
    with (
        ExitStack() as stack,
        gateway_process(data, dev=False, workers=2, timeout=60) as (proc, gw),
    ):
        node = stack.enter_context(Node(proc, gw, data))
        token = node.device("sv-owner")
        acked: list[int] = []
        refused = 0
        old = _pid_of(data, "store", 0)
        with node.https() as https:
            for n in range(20):
                r = https.post(
                    "/onep:v1/stack/alias",
                    content=f"data_in={n}".encode(),
                    headers={"X-Exosite-CIK": token},
                )
                assert r.status_code == 204
                acked.append(n)
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 15
            n = 20
            while time.monotonic() < deadline:
                try:
                    r = https.post(
                        "/onep:v1/stack/alias",
                        content=f"data_in={n}".encode(),
                        headers={"X-Exosite-CIK": token},
                    )
                except httpx.TransportError:
                    refused += 1  # a worker closes the connection of a failed write
                    continue
                if r.status_code == 204:
                    acked.append(n)
                    if refused and _pid_of(data, "store", 0) not in (0, old):
                        break
                else:
                    assert r.status_code == 503, r.text
                    refused += 1
                n += 1
        assert refused, "no write was refused while the store owner was gone"
        assert _pid_of(data, "store", 0) not in (0, old)
        events = []
        cursor = 0
        while True:
            page = node.api.get(
                "/connectors/demo/events", params={"after": cursor, "limit": 1000}
            ).json()
            if not page["items"]:
                break
            events += page["items"]
            cursor = page["next"]
        stored = {
            int(v)
            for e in events
            if e["type"] == "data_in" and e["identity"] == "sv-owner"
            for group in e["payload"]
            for v in group["values"].values()
        }
        assert set(acked) <= stored


def test_a_killed_supervisor_leaves_no_orphan(data: Path) -> None:
    with gateway_process(data, dev=False, workers=2, timeout=60) as (proc, gw):
        children = [p.pid for p in gw.info.processes]
        ports = dict(gw.ports)
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(_alive(p) for p in children), 5, "every child gone")
    for port in ports.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # free again


def test_sigterm_drains_and_stops_every_process(data: Path) -> None:
    with (
        ExitStack() as stack,
        gateway_process(data, dev=False, workers=2, timeout=60) as (proc, gw),
    ):
        node = stack.enter_context(Node(proc, gw, data))
        token = node.device("sv-term")
        everyone = tree_pids(proc.pid)
        assert len(everyone) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not any(_alive(p) for p in everyone)
        assert not (data / "run.json").exists()
    # the store was closed cleanly: the next start finds the device and its token works
    with (
        gateway_process(data, dev=False, workers=2, timeout=60) as (proc, gw),
        Node(proc, gw, data) as node,
        node.https() as https,
    ):
        r = https.post(
            "/onep:v1/stack/alias", content=b"data_in=x", headers={"X-Exosite-CIK": token}
        )
        assert r.status_code == 204


def test_a_crash_loop_backs_off_and_is_reported(data: Path) -> None:
    with gateway_process(data, dev=False, workers=2, timeout=60) as (_proc, gw):
        killed: set[int] = set()
        for _ in range(3):
            pid = int(
                wait_for(
                    lambda: (p := _pid_of(data, "worker", 2)) not in killed and p, 20, "a worker"
                )
            )  # type: ignore[call-overload]
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)

        def reported() -> bool:
            info = read_run_json(data)
            if info is None:
                return False
            w = next(p for p in info.processes if p.role == "worker" and p.index == 2)
            return w.crash_loop and w.next_start_s > 1.0

        wait_for(reported, 10, "the crash loop in run.json")
        # ... and in /metrics
        lines = httpx.get(f"http://127.0.0.1:{gw.ports['api']}/metrics", timeout=10).text
        values = {
            name: float(v)
            for name, _, v in (x.partition(" ") for x in lines.splitlines())
            if name.startswith("gateway_process")
        }
        assert values["gateway_processes_crash_looping"] == 1
        # two restarts so far, a third once the back-off has passed
        assert values["gateway_process_restarts_total"] in (2, 3)


def test_a_second_serve_on_the_same_directory_exits_with_one_line(data: Path) -> None:
    with gateway_process(data, dev=False, workers=2, timeout=60) as (proc, _gw):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--data",
                str(data),
                "--workers",
                "2",
                "--host",
                "127.0.0.1",
                "--tls-port",
                "0",
                "--mqtt-tls-port",
                "0",
                "--api-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [
            f"error: {data} is in use by another gateway (pid {proc.pid}); "
            "stop it or pass another --data"
        ]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_naming_the_flag(data: Path, workers: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--data",
                str(data),
                "--workers",
                workers,
                "--host",
                "127.0.0.1",
                "--tls-port",
                "0",
                "--mqtt-tls-port",
                str(port),
                "--api-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use (--mqtt-tls-port); stop what uses it or "
        f"pass another --mqtt-tls-port"
    ]


def test_the_devices_of_a_killed_worker_go_offline(data: Path) -> None:
    """A device whose worker died and that does not come back is not left "online": the
    store owner takes the worker's connections offline (``disconnect``, ``worker_lost``)."""
    with (
        ExitStack() as stack,
        gateway_process(data, dev=False, workers=2, timeout=60) as (
            proc,
            gw,
        ),
    ):
        node = stack.enter_context(Node(proc, gw, data))
        mqtt = Mqtt(node, node.device("sv-lost"))
        with pinned_to(gw.info, 1):
            mqtt.connect()

        def device() -> dict[str, object]:
            return dict(node.api.get("/connectors/demo/devices/sv-lost").json())

        wait_for(lambda: device()["online"], 10, "online")
        os.kill(worker_pid(gw.info, 1), signal.SIGKILL)
        wait_for(lambda: not device()["online"], 10, "offline after the worker died")
        events = node.api.get("/connectors/demo/events", params={"limit": 1000}).json()["items"]
        last = [e for e in events if e["identity"] == "sv-lost"][-1]
        assert (last["type"], last["reason"]) == ("disconnect", "worker_lost")
        mqtt.c.loop_stop()


def _node_certificate(data: Path, days: int) -> str:
    """Issue a node certificate from the data directory's CA and write it in place."""
    tls = data / "tls"
    chain, key = issue_server_cert(
        (tls / "ca.pem").read_text(),
        (tls / "ca.key").read_text(),
        server_names("localhost"),
        days=days,
    )
    (tls / "server.key").write_text(key)
    (tls / "server.pem").write_text(chain)
    return chain


def _served(node: Node, index: int) -> str:
    """The fingerprint of the certificate worker ``index`` serves on a new handshake."""
    ctx = ssl.create_default_context(cafile=node.gw.ca)
    with (
        pinned_to(node.gw.info, index),
        socket.create_connection(("127.0.0.1", node.gw.ports["tls"]), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=node.gw.fqdn()) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)


def test_certificate_reloads_reach_every_worker(data: Path) -> None:
    """SIGHUP to ``gateway serve`` and ``POST /api/v1/tls/reload`` (served by the store
    owner) both make every worker serve the new node certificate on new handshakes."""
    with (
        ExitStack() as stack,
        gateway_process(data, dev=False, workers=2, timeout=60) as (
            proc,
            gw,
        ),
    ):
        node = stack.enter_context(Node(proc, gw, data))
        first = _node_certificate(data, days=40)
        proc.send_signal(signal.SIGHUP)
        for index in (1, 2):
            wait_for(lambda i=index: _served(node, i) == fingerprint(first), 10, "SIGHUP")
        assert proc.poll() is None
        assert sorted(p.pid for p in gw.info.processes) == sorted(
            p.pid for p in (read_run_json(data) or gw.info).processes
        )  # nothing restarted
        second = _node_certificate(data, days=50)
        r = node.api.post("/tls/reload")
        assert r.status_code == 200, r.text
        for index in (1, 2):
            wait_for(lambda i=index: _served(node, i) == fingerprint(second), 10, "the API")
