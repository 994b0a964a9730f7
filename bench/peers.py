"""Peers the benchmark starts itself on 127.0.0.1, in the same run as the gateway.

* mosquitto (Debian package): plain + TLS listeners, persistence off or on (autosave).
* amqtt (PyPI) in its own venv under ``bench/.peers/`` (created on demand).
* bare hypercorn (trio worker) serving ``bench.asgi_bare:app`` (204 for every request).
* the null sink (``bench.nullsink``) for the load generators' own ceilings.
* the gateway itself (``gateway serve ... --dev``), when its CLI exists.

Every server is a child process with a known pid (for /proc RSS), stopped by pid on exit.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / ".peers"
AMQTT_VENV = PEERS_DIR / "amqtt-venv"
AMQTT_SPEC = "amqtt==0.12.1"
PY = sys.executable


class PeerUnavailable(RuntimeError):
    """The peer cannot be started here (not installed, not built yet); the scenario skips."""


@dataclass
class Server:
    """A running server: its pid (for RSS) and named ports."""

    name: str
    pid: int
    ports: dict[str, int]
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def rss_bytes(self) -> int:
        """Resident set size of the server process (and its children, if it forks workers)."""
        return sum(rss_of(p) for p in [self.pid, *children_of(self.pid)])


def rss_of(pid: int) -> int:
    """VmRSS of `pid` from /proc, in bytes (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def free_port() -> int:
    """An unused 127.0.0.1 port, for servers (mosquitto) that cannot report an ephemeral one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerUnavailable(f"server exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise PeerUnavailable(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def make_cert(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for `hostname` and 127.0.0.1; (cert, key) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one child we started (by its pid), then close our ends of its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise PeerUnavailable("mosquitto is not installed (apt-get install mosquitto)")
    return found


def mosquitto_version() -> str:
    try:
        out = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, check=False
        ).stdout
    except PeerUnavailable:
        return "absent"
    return out.splitlines()[0].replace("mosquitto version ", "") if out else "unknown"


@contextlib.contextmanager
def mosquitto(workdir: Path, *, persistence: bool = False, tls: bool = True) -> Iterator[Server]:
    """mosquitto with a plain listener ("mqtt") and, if `tls`, a TLS one ("mqtt_tls")."""
    binary = mosquitto_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = make_cert(workdir.parent / "certs")
    ports = {"mqtt": free_port()}
    lines = [
        f"user {getpass.getuser()}",
        "allow_anonymous true",
        "max_connections -1",
        "max_inflight_messages 0",
        "max_queued_messages 100000",
        "set_tcp_nodelay true",
        "log_dest none",
        f"listener {ports['mqtt']} 127.0.0.1",
    ]
    if tls:
        ports["mqtt_tls"] = free_port()
        lines += [f"listener {ports['mqtt_tls']} 127.0.0.1", f"certfile {cert}", f"keyfile {key}"]
    if persistence:
        # mosquitto's most durable mode: the in-memory store saved every second.  It never
        # fsyncs per message, so it is still weaker than the gateway's ack-after-commit.
        lines[0:0] = [
            "persistence true",
            f"persistence_location {workdir}/",
            "autosave_interval 1",
        ]
    else:
        lines.insert(0, "persistence false")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = (workdir / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        for port in ports.values():
            wait_port(port, proc=proc)
        yield Server("mosquitto", proc.pid, ports, proc)
    finally:
        _stop(proc)
        log.close()


def ensure_amqtt() -> Path:
    """Create bench/.peers/amqtt-venv with amqtt if missing; return its `amqtt` script."""
    script = AMQTT_VENV / "bin" / "amqtt"
    if script.exists():
        return script
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3") or PY
    subprocess.run([base, "-m", "venv", str(AMQTT_VENV)], check=True)
    subprocess.run(
        [
            str(AMQTT_VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            AMQTT_SPEC,
        ],
        check=True,
    )
    return script


def amqtt_version() -> str:
    pip = AMQTT_VENV / "bin" / "pip"
    if not pip.exists():
        return "absent"
    out = subprocess.run(
        [str(pip), "show", "amqtt"], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split()[1]
    return "unknown"


@contextlib.contextmanager
def amqtt(workdir: Path, *, tls: bool = False) -> Iterator[Server]:
    """amqtt broker with anonymous auth and no logging plugins (its fastest configuration)."""
    try:
        script = ensure_amqtt()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PeerUnavailable(f"amqtt venv could not be created: {exc}") from exc
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {"mqtt": free_port()}
    cfg = [
        "listeners:",
        "  default:",
        "    type: tcp",
        f"    bind: 127.0.0.1:{ports['mqtt']}",
        "    max_connections: 0",
    ]
    if tls:
        cert, key = make_cert(workdir.parent / "certs")
        ports["mqtt_tls"] = free_port()
        cfg += [
            "  tls:",
            "    type: tcp",
            f"    bind: 127.0.0.1:{ports['mqtt_tls']}",
            "    ssl: true",
            f"    certfile: {cert}",
            f"    keyfile: {key}",
        ]
    cfg += [
        "plugins:",
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:",
        "    allow_anonymous: true",
    ]
    conf = workdir / "amqtt.yaml"
    conf.write_text("\n".join(cfg) + "\n")
    log = (workdir / "amqtt.log").open("wb")
    proc = subprocess.Popen([str(script), "-c", str(conf)], stdout=log, stderr=log)
    try:
        for port in ports.values():
            wait_port(port, timeout=30, proc=proc)
        yield Server("amqtt", proc.pid, ports, proc)
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def hypercorn_bare(workdir: Path, *, tls: bool = False) -> Iterator[Server]:
    """Bare hypercorn (trio worker, one process) with the 204 app; port "http" (TLS if asked)."""
    hyper = Path(PY).with_name("hypercorn")
    if not hyper.exists():
        raise PeerUnavailable("hypercorn is not installed in this venv")
    port = free_port()
    args = [
        str(hyper),
        "--worker-class",
        "trio",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--keep-alive",
        "600",
        "--backlog",
        "4096",
    ]
    if tls:
        cert, key = make_cert(workdir.parent / "certs")
        args += ["--certfile", str(cert), "--keyfile", str(key)]
    args.append("bench.asgi_bare:app")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=proc)
        yield Server("hypercorn", proc.pid, {"http": port}, proc)
    finally:
        _stop(proc)


@contextlib.contextmanager
def null_sink(
    mode: str = "mqtt", *, processes: int = 1, tls: bool = False, workdir: Path | None = None
) -> Iterator[Server]:
    """The null sink as a child process; port "mqtt" or "http"."""
    args = [PY, "-m", "bench.nullsink", "--mode", mode, "--processes", str(processes)]
    if tls:
        cert, key = make_cert((workdir or PEERS_DIR / "tmp").parent / "certs")
        args += ["--certfile", str(cert), "--keyfile", str(key)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline() or b"{}")
        if "port" not in info:
            raise PeerUnavailable("null sink did not start")
        port_name = "mqtt_tls" if (tls and mode == "mqtt") else mode
        yield Server("nullsink", proc.pid, {port_name: info["port"]}, proc)
    finally:
        _stop(proc)


GATEWAY_UNAVAILABLE = "gateway not available yet"


def gateway_command() -> list[str]:
    exe = Path(PY).with_name("gateway")
    if not exe.exists():
        raise PeerUnavailable(f"{GATEWAY_UNAVAILABLE}: no {exe}")
    probe = subprocess.run(
        [str(exe), "serve", "--help"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise PeerUnavailable(f"{GATEWAY_UNAVAILABLE}: `gateway serve --help` failed: {tail}")
    return [str(exe)]


@contextlib.contextmanager
def gateway(workdir: Path, *, pure_python: bool = False) -> Iterator[Server]:
    """`gateway serve --dev` on ephemeral ports; waits for DIR/run.json.

    ``extra`` carries the demo connector id, the admin token and the data directory.
    """
    cmd = gateway_command()
    data = workdir / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    env = dict(os.environ)
    if pure_python:
        env["GATEWAY_PURE_PYTHON"] = "1"
    args = [
        *cmd,
        "serve",
        "--data",
        str(data),
        "--dev",
        "--synchronous",
        "NORMAL",
        "--api-port",
        "0",
        "--tls-port",
        "0",
        "--mqtt-tls-port",
        "0",
        "--dev-http-port",
        "0",
        "--dev-mqtt-port",
        "0",
        "--host",
        "127.0.0.1",
    ]
    log = (workdir / "gateway.log").open("wb")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        run_json = data / "run.json"
        while not run_json.exists():
            if proc.poll() is not None:
                raise PeerUnavailable(
                    f"{GATEWAY_UNAVAILABLE}: gateway exited with {proc.returncode}"
                    f" (see {workdir / 'gateway.log'})"
                )
            if time.monotonic() > deadline:
                raise PeerUnavailable(f"{GATEWAY_UNAVAILABLE}: no run.json after 60 s")
            time.sleep(0.05)
        time.sleep(0.05)
        info = json.loads(run_json.read_text())
        token_file = data / "admin.token"
        extra = {
            "connector": str(info.get("demo_connector", "")),
            "base_domain": str(info.get("base_domain", "localhost")),
            "admin_token": token_file.read_text().strip() if token_file.exists() else "",
            "data": str(data),
        }
        ports = {k: int(v) for k, v in info.get("ports", {}).items()}
        yield Server("gateway", int(info.get("pid", proc.pid)), ports, proc, extra)
    finally:
        _stop(proc)
        log.close()
