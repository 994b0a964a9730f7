"""Peers the benchmark starts itself on 127.0.0.1, in the same run as the gateway.

* mosquitto (Debian package): plain + TLS listeners, persistence off or on (autosave).
* amqtt (PyPI) in its own venv under ``bench/.peers/`` (created on demand).
* aedes (npm, Node.js) in ``bench/.peers/aedes`` (``npm ci`` by scripts/bench from the
  package.json + package-lock.json committed in ``bench/peers/aedes/``): plain + TLS.
* bare hypercorn (uvloop worker, its fastest: asyncio 4.3k, uvloop 4.7k, trio 1.5k req/s
  measured side by side) and bare uvicorn (httptools + uvloop) serving
  ``bench.asgi_bare:app`` (204 for every request).
* nginx (Debian package) answering ``return 204``: the HTTP generators' (wrk, h2load) ceiling.
* the null sink (``bench.nullsink``) for the MQTT load generator's own ceiling.
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
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.testing.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / ".peers"
AMQTT_VENV = PEERS_DIR / "amqtt-venv"
AMQTT_SPEC = "amqtt==0.12.1"
AEDES_SRC = ROOT / "bench" / "peers" / "aedes"  # package.json, package-lock.json, broker.mjs
AEDES_DIR = PEERS_DIR / "aedes"  # where scripts/bench runs `npm ci` (ignored by git)
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

    @property
    def root(self) -> int:
        """The process we started (its tree holds every worker the server forks)."""
        return self.proc.pid if self.proc is not None else self.pid

    def rss_bytes(self) -> int:
        """Resident set size of the server's whole process tree (workers included)."""
        return sum(rss_of(p) for p in process_tree(self.root))

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's whole process tree (see tree_cpu_seconds)."""
        return tree_cpu_seconds(self.root)


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


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (children of children...), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo += children_of(p)
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and every descendant, from /proc/<pid>/stat.

    Each process contributes utime + stime + cutime + cstime: a live process's cutime/cstime
    hold only its children that already exited and were reaped (they are no longer in the
    tree), so nothing is counted twice and a worker that exits mid-run keeps its share.
    Processes that vanish between the walk and the read count as 0.
    """
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


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


def aedes_ready() -> Path:
    """The aedes broker script inside bench/.peers/aedes, installed by scripts/bench.

    Never installs anything itself (no download while a scenario runs): a missing or stale
    install (its lock differs from the committed one) makes the aedes rows skip with the fix.
    """
    if shutil.which("node") is None:
        raise PeerUnavailable("node is not installed (scripts/bench installs nodejs)")
    lock = AEDES_DIR / "package-lock.json"
    if not (AEDES_DIR / "node_modules" / "aedes").is_dir() or not lock.exists():
        raise PeerUnavailable("aedes is not installed in bench/.peers/aedes (run scripts/bench)")
    if lock.read_bytes() != (AEDES_SRC / "package-lock.json").read_bytes():
        raise PeerUnavailable("bench/.peers/aedes is stale (run scripts/bench to reinstall)")
    script = AEDES_DIR / "broker.mjs"
    shutil.copyfile(AEDES_SRC / "broker.mjs", script)  # ESM resolves node_modules beside it
    return script


def aedes_version() -> str:
    try:
        meta = json.loads((AEDES_DIR / "node_modules" / "aedes" / "package.json").read_text())
    except (OSError, ValueError):
        return "absent"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return f"{meta.get('version', '?')} (node {node.stdout.strip() or '?'})"


@contextlib.contextmanager
def aedes(workdir: Path, *, tls: bool = False) -> Iterator[Server]:
    """aedes (in-memory persistence, anonymous): port "mqtt" and, if `tls`, "mqtt_tls"."""
    script = aedes_ready()
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["node", str(script)]
    if tls:
        cert, key = make_cert(workdir.parent / "certs")
        args += ["--cert", str(cert), "--key", str(key)]
    log = (workdir / "aedes.log").open("wb")
    proc = subprocess.Popen(args, cwd=AEDES_DIR, stdout=subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        try:
            info = json.loads(line)
        except ValueError as exc:
            raise PeerUnavailable(f"aedes did not start (see {workdir / 'aedes.log'})") from exc
        yield Server("aedes", proc.pid, {k: int(v) for k, v in info["ports"].items()}, proc)
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def hypercorn_bare(workdir: Path, *, tls: bool = False) -> Iterator[Server]:
    """Bare hypercorn (uvloop worker, one process) with the 204 app; port "http" (TLS if asked).

    Its fastest worker class: comparing the gateway with hypercorn's trio worker (three
    times slower) would flatter the gateway."""
    hyper = Path(PY).with_name("hypercorn")
    if not hyper.exists():
        raise PeerUnavailable("hypercorn is not installed in this venv")
    port = free_port()
    args = [
        str(hyper),
        "--worker-class",
        "uvloop",
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
def uvicorn_bare(workdir: Path, *, tls: bool = False) -> Iterator[Server]:
    """Bare uvicorn (one process, httptools parser, uvloop) with the 204 app; port "http"."""
    exe = Path(PY).with_name("uvicorn")
    if not exe.exists():
        raise PeerUnavailable("uvicorn is not installed in this venv (pip install -e .[bench])")
    port = free_port()
    args = [
        str(exe),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--backlog",
        "4096",
        "--timeout-keep-alive",
        "600",
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "on",
    ]
    if tls:
        cert, key = make_cert(workdir.parent / "certs")
        args += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    args.append("bench.asgi_bare:app")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=proc)
        yield Server("uvicorn", proc.pid, {"http": port}, proc)
    finally:
        _stop(proc)


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        raise PeerUnavailable("nginx is not installed (scripts/bench installs nginx-light)")
    return found


@contextlib.contextmanager
def nginx_sink(workdir: Path) -> Iterator[Server]:
    """nginx answering ``204`` to every request, the HTTP generators' ceiling: port "http"
    (HTTP/1.1) and "https" (TLS 1.3, ALPN h2 or http/1.1).

    One process (``master_process off``): a C server with no application work, so a wrk or
    h2load figure against it is what the generator itself can drive on this machine.  It
    reads and discards request bodies (``return`` does) and keeps connections alive.
    """
    binary = nginx_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = make_cert(workdir.parent / "certs")
    ports = {"http": free_port(), "https": free_port()}
    temp = [f"{kind}_temp_path {workdir}/{kind};" for kind in (
        "client_body", "proxy", "fastcgi", "uwsgi", "scgi")]  # fmt: skip
    conf = workdir / "nginx.conf"
    conf.write_text(
        "\n".join(
            [
                "daemon off;",
                "master_process off;",
                f"pid {workdir}/nginx.pid;",
                f"error_log {workdir}/error.log warn;",
                "events { worker_connections 20000; }",
                "http {",
                "  access_log off;",
                *temp,
                "  keepalive_requests 1000000000;",
                "  keepalive_timeout 600s;",
                "  server {",
                f"    listen 127.0.0.1:{ports['http']} backlog=4096;",
                f"    listen 127.0.0.1:{ports['https']} ssl http2 backlog=4096;",
                f"    ssl_certificate {cert};",
                f"    ssl_certificate_key {key};",
                "    ssl_protocols TLSv1.3;",
                "    location / { return 204; }",
                "  }",
                "}",
                "",
            ]
        )
    )
    log = (workdir / "nginx.out").open("wb")
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
        stdout=log,
        stderr=log,
    )
    try:
        for port in ports.values():
            wait_port(port, proc=proc)
        yield Server("nginx", proc.pid, ports, proc)
    finally:
        _stop(proc)
        log.close()


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


# The benchmarks measure the engine against peers that have no such policy: one address
# opening 40,000 connections and devices publishing as fast as they are acknowledged are
# the load itself, so the demo connector's rate limits are turned off (docs/decisions.md
# "Limits"; the limits have their own figures in docs/reliability.md).
_NO_RATE_LIMITS = {
    "limits": {
        "connections_per_ip": {"rate": 0, "burst": 1},
        "connections": {"rate": 0, "burst": 1},
        "publishes": {"rate": 0, "burst": 1},
        "publish_bytes": {"rate": 0, "burst": 1},
        "flapping": {"max_connects": 0},
    }
}


def _limits_off(api_port: int, connector: str, token: str) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{api_port}/api/v1/connectors/{connector}/settings",
        data=json.dumps(_NO_RATE_LIMITS).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


@contextlib.contextmanager
def gateway(
    workdir: Path, *, pure_python: bool = False, workers: int | None = 1
) -> Iterator[Server]:
    """`gateway serve --dev` on ephemeral ports; waits for DIR/run.json.

    ``workers``: 1 is one process (the figures every peer comparison uses); N the
    multi-process node; None leaves the flag out (the default node `gateway serve` starts,
    as the README says).  CPU and memory are summed over the whole process tree.
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
        *([] if workers is None else ["--workers", str(workers)]),
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
        _limits_off(ports["api"], extra["connector"], extra["admin_token"])
        yield Server("gateway", int(info.get("pid", proc.pid)), ports, proc, extra)
    finally:
        _stop(proc)
        log.close()
