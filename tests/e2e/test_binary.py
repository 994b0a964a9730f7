"""The single-file edge binary (``scripts/build-binary`` → ``dist/gateway``), run the way an
edge box runs it: copied out of the repository, started with a clean environment (no venv,
no PYTHONPATH, no project on PATH), ``serve --data DIR --dev`` on ephemeral ports.

Then, through that node (the binary's supervisor, store owner and two workers, forked
from the one binary): a device activates and writes over HTTPS (SNI
``demo.m2.localhost``, the binary's self-generated CA), another provisions over plain MQTT and
writes over MQTT/TLS (paho-mqtt), the web console's static files are served, and the CLI in
the same binary (``state get``, ``device show``) reads the values back through the management
API.  A restart on the same data directory keeps them (the upgrade path: migrations run on
start).  The binary must load the compiled hot path: ``--version`` says "compiled" and
``GET /api/v1/health`` has ``"compiled": true``.

The build is cached: ``scripts/build-binary --if-stale`` skips PyInstaller when
``dist/gateway`` is newer than every source file that goes into it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import paho.mqtt.client as paho
import pytest

from gateway.testing.server import TestGateway, gateway_process

ROOT = Path(__file__).resolve().parents[2]
HOST = "demo.m2.localhost"

pytestmark = [
    pytest.mark.slow,
]


@pytest.fixture(autouse=True)
def _host_name(resolve: Callable[..., None]) -> None:
    resolve(HOST)


def _clean_env(home: Path) -> dict[str, str]:
    """What an edge box has: a PATH without the venv, no VIRTUAL_ENV/PYTHONPATH/PYTHONHOME."""
    return {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/gateway (rebuilt only when stale), copied to a directory outside the repo."""
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-binary"), "--if-stale"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    built = Path(build.stdout.strip().splitlines()[-1])
    assert built == ROOT / "dist" / "gateway"
    edge = tmp_path_factory.mktemp("edge")
    assert ROOT not in edge.parents
    copy = edge / "gateway"
    shutil.copy2(built, copy)
    return copy


def run_bin(
    binary: Path, *args: str, env: dict[str, str], cwd: Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r


def cli(binary: Path, gw: TestGateway, *args: str, env: dict[str, str], cwd: Path) -> object:
    """``<binary> GROUP COMMAND ARGS --api URL --data DIR --json`` → decoded JSON."""
    r = run_bin(
        binary,
        *args,
        "--api",
        f"http://127.0.0.1:{gw.ports['api']}",
        "--data",
        gw.info.data,
        "--json",
        env=env,
        cwd=cwd,
    )
    return msgspec.json.decode(r.stdout)


@pytest.fixture
def served(binary: Path, tmp_path: Path) -> Iterator[tuple[TestGateway, dict[str, str]]]:
    env = _clean_env(tmp_path)
    # the multi-process node (docs/architecture.md "The node"): the binary forks its store
    # owner and workers without re-executing itself
    with gateway_process(
        tmp_path / "data", command=[str(binary)], env=env, timeout=90, workers=2
    ) as (proc, gw):
        assert sorted(p.role for p in gw.info.processes) == ["store", "worker", "worker"]
        assert proc.poll() is None
        yield gw, env


class MqttClient:
    """paho-mqtt with its loop in paho's thread; the first message's payload is kept."""

    def __init__(self, password: str | None) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="")  # type: ignore[attr-defined]
        if password is not None:
            self.c.username_pw_set("", password)
        self.connected = threading.Event()
        self.message = threading.Event()
        self.rc: object = None
        self.payloads: list[tuple[str, bytes]] = []
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message

    def _on_connect(
        self, client: object, userdata: object, flags: object, rc: object, props: object = None
    ) -> None:
        self.rc = rc
        self.connected.set()

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        self.payloads.append((msg.topic, bytes(msg.payload)))
        self.message.set()

    def connect(self, host: str, port: int, *, ca: str | None = None) -> None:
        if ca is not None:
            self.c.tls_set_context(ssl.create_default_context(cafile=ca))
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(15), "no CONNACK"
        assert self.rc == 0, self.rc

    def publish(self, topic: str, payload: str) -> None:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(15)  # returns after the PUBACK, i.e. after the commit
        assert info.is_published()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_version_says_compiled(binary: Path, tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    out = run_bin(binary, "--version", env=env, cwd=tmp_path).stdout
    assert "compiled" in out, out
    # The binary is compiled-only: a stray GATEWAY_PURE_PYTHON does not switch the hot path.
    r = run_bin(binary, "--version", env={**env, "GATEWAY_PURE_PYTHON": "1"}, cwd=tmp_path)
    assert "compiled" in r.stdout, r.stdout
    assert "GATEWAY_PURE_PYTHON ignored" in r.stderr


def test_package_data_and_compiled_modules_inside(binary: Path) -> None:
    """The archive holds every gateway/_ext/*.so and every package data file (SQL, console
    assets), so the binary never needs the source tree."""
    from PyInstaller.archive.readers import CArchiveReader  # type: ignore[import-untyped]

    toc = set(CArchiveReader(str(binary)).toc)
    for so in (ROOT / "gateway" / "_ext").glob("*.so"):
        assert f"gateway/_ext/{so.name}" in toc, so.name
    console = list((ROOT / "gateway" / "mgmt" / "console" / "static").iterdir())
    assert {"index.html", "app.js", "style.css"} <= {f.name for f in console}
    for pattern in ("mgmt/console/static/*", "**/*.sql"):
        for f in (ROOT / "gateway").glob(pattern):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".py":
                assert f.relative_to(ROOT).as_posix() in toc, f


def test_every_command_is_inside(binary: Path, tmp_path: Path) -> None:
    """The binary offers exactly the commands the source tree offers (gateway/cli/main.py)."""
    import click

    from gateway.cli import main as source_cli

    with click.Context(source_cli.cli) as ctx:
        expected = source_cli.cli.list_commands(ctx)
    env = _clean_env(tmp_path)
    top = run_bin(binary, "--help", env=env, cwd=tmp_path).stdout
    names = [line.split()[0] for line in top.split("Commands:", 1)[1].splitlines() if line.strip()]
    assert names == expected
    for required in ("serve", "connector", "device", "state", "certs"):
        assert required in names, names
    # An offline command end to end: certs creates the development CA with cryptography.
    out = run_bin(
        binary, "certs", "--data", str(tmp_path / "d"), "show-ca", env=env, cwd=tmp_path
    ).stdout
    assert out.startswith(str(tmp_path / "d" / "tls"))
    assert "-----BEGIN CERTIFICATE-----" in out


def test_devices_over_https_and_mqtt_then_cli(
    binary: Path, served: tuple[TestGateway, dict[str, str]], tmp_path: Path
) -> None:
    gw, env = served
    api = f"http://127.0.0.1:{gw.ports['api']}/api/v1"
    health = httpx.get(f"{api}/health", timeout=10).json()
    assert health["compiled"] is True, health
    assert health["status"] == "ok"
    # the web console's files are found inside the binary
    console = f"http://127.0.0.1:{gw.ports['api']}/console/"
    assert "<html" in httpx.get(console, timeout=10).text.lower()
    assert httpx.get(console + "app.js", timeout=10).status_code == 200

    # HTTPS on the multi-protocol TLS port, trusting the CA the binary generated.
    tls = ssl.create_default_context(cafile=gw.ca)
    with httpx.Client(base_url=f"https://{HOST}:{gw.ports['tls']}", verify=tls, timeout=15) as http:
        r = http.post("/provision/activate", data={"id": "edge-http-1"})
        assert r.status_code == 200, r.text
        token = r.text
        assert len(token) == 40
        r = http.post(
            "/onep:v1/stack/alias", data={"data_in": "from-https"}, headers={"X-Exosite-CIK": token}
        )
        assert r.status_code == 204, r.text

    # MQTT: anonymous provisioning on the dev port, then a QoS 1 write over MQTT/TLS.
    prov = MqttClient(None)
    prov.connect("127.0.0.1", gw.ports["dev_mqtt"])
    try:
        prov.publish("$provision/edge-mqtt-1", "")
        assert prov.message.wait(15), "no token published back"
        mqtt_token = prov.payloads[0][1].decode()
        assert len(mqtt_token) == 40
    finally:
        prov.close()
    dev = MqttClient(mqtt_token)
    dev.connect(HOST, gw.ports["mqtt_tls"], ca=gw.ca)
    try:
        dev.publish("$resource/data_in", "from-mqtt")
    finally:
        dev.close()

    # The operator CLI of the same binary reads both back through the management API.
    cwd = tmp_path
    state = cli(binary, gw, "state", "get", "demo", "edge-http-1", env=env, cwd=cwd)
    assert state["data_in"]["reported"] == "from-https", state  # type: ignore[index]
    state = cli(binary, gw, "state", "get", "demo", "edge-mqtt-1", env=env, cwd=cwd)
    assert state["data_in"]["reported"] == "from-mqtt", state  # type: ignore[index]
    shown = cli(binary, gw, "device", "show", "demo", "edge-http-1", env=env, cwd=cwd)
    assert shown["status"] == "provisioned", shown  # type: ignore[index]
    # Tables (rich) work inside the binary too; the address comes from DIR/run.json.
    table = run_bin(binary, "device", "list", "demo", "--data", gw.info.data, env=env, cwd=cwd)
    assert table.stdout.split()[:3] == ["IDENTITY", "STATUS", "LOCKED"], table.stdout
    assert "edge-http-1" in table.stdout


def test_restart_keeps_the_data_directory(binary: Path, tmp_path: Path) -> None:
    """Stop and start again on the same DIR (what an upgrade does): state and the device
    credentials survive, the CA is reused."""
    env = _clean_env(tmp_path)
    data = tmp_path / "data"
    with gateway_process(data, command=[str(binary)], env=env, timeout=90) as (proc, gw):
        ca_before = Path(gw.ca).read_bytes()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{gw.ports['dev_http']}",
            headers={"Host": "demo.devmode-m2.localhost"},
            timeout=15,
        ) as http:
            r = http.post("/provision/activate", data={"id": "edge-keep-1"})
            assert r.status_code == 200, r.text
            token = r.text
            r = http.post(
                "/onep:v1/stack/alias", data={"data_in": "kept"}, headers={"X-Exosite-CIK": token}
            )
            assert r.status_code == 204, r.text
    assert proc.returncode == 0, proc.returncode  # SIGTERM reached the gateway: clean stop
    assert not (data / "run.json").exists()

    with gateway_process(data, command=[str(binary)], env=env, timeout=90) as (_p, gw):
        assert Path(gw.ca).read_bytes() == ca_before
        with httpx.Client(
            base_url=f"http://127.0.0.1:{gw.ports['dev_http']}",
            headers={"Host": "demo.devmode-m2.localhost"},
            timeout=15,
        ) as http:
            r = http.get("/onep:v1/stack/alias?data_in", headers={"X-Exosite-CIK": token})
            assert r.status_code == 200, r.text
            assert r.text == "data_in=kept"
        state = cli(binary, gw, "state", "get", "demo", "edge-keep-1", env=env, cwd=tmp_path)
        assert state["data_in"]["reported"] == "kept", state  # type: ignore[index]
