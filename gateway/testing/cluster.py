"""A cluster on one machine: PostgreSQL, NATS (JetStream), HAProxy and N gateway nodes on
loopback (``scripts/cluster up|down|status``; docs/scale.md).

Everything runs from the Debian packages (``postgresql``, ``nats-server``, ``haproxy``),
installed with apt-get when missing and this runs as root, on 127.0.0.1 only:

* **PostgreSQL**: its own cluster in ``DIR/postgresql`` (``initdb`` once, ``trust``
  authentication on loopback only), database and role ``gateway``; the ``postgres`` server
  runs as the ``postgres`` user when started by root (it refuses root).  When ``DIR`` is
  not reachable by that user (a private temporary directory) the data directory is made in
  ``/tmp`` and ``DIR/postgresql`` points to it.
* **NATS** with JetStream, its store in ``DIR/nats``.
* **N nodes**: ``gateway serve`` each with its own data directory ``DIR/node-<i>``, its own
  management port (``--api-port-base`` + i - 1, or free ports) and device ports on
  127.0.0.1, ``--store`` the PostgreSQL URL, ``--bus`` the NATS URL, ``--node-name
  node-<i>``, trusting HAProxy's PROXY headers.  Node 1 starts first (it creates the schema,
  the demo connector, the development CA, the admin token and the key for secrets at rest);
  its ``tls/``, ``admin.token`` and ``secrets.key`` are copied to the other nodes before
  they start: behind a proxy that does not terminate TLS every node must present the same
  certificate, accept the same token and open the same sealed secrets.
* **HAProxy** in TCP mode on the usual device ports (8443, 8883): it reads the TLS
  ClientHello's SNI (``req.ssl_sni``) without terminating TLS, routes the gateway's names
  to the nodes (least connections), checks each node's ``GET /api/v1/health`` every second
  and speaks PROXY protocol v2 to the nodes (``send-proxy-v2``).

``DIR/cluster.json`` says where everything is (the format of docs/scale.md); ``DIR/state.json``
lists the processes ``up`` started, which ``down`` stops (a node's ``pid`` is its supervisor:
SIGTERM drains it, SIGKILL ends every process of it).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec

from gateway.testing.ports import free_port

__all__ = [
    "ClusterInfo",
    "HaproxyInfo",
    "NodeInfo",
    "down",
    "haproxy_config",
    "load",
    "start_node",
    "status",
    "up",
]

DEFAULT_DIR = "./var/cluster"
DEBIAN_PACKAGES = ("postgresql", "nats-server", "haproxy")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0


class HaproxyInfo(msgspec.Struct):
    host: str
    tls_port: int
    mqtt_tls_port: int


class NodeInfo(msgspec.Struct):
    name: str
    api: str  # the management base URL, e.g. http://127.0.0.1:9081
    pid: int  # the node's supervisor: SIGKILL ends the whole node


class ClusterInfo(msgspec.Struct):
    """``DIR/cluster.json``."""

    haproxy: HaproxyInfo
    nodes: list[NodeInfo]
    admin_token: str
    ca: str
    postgresql: str
    nats: str


class _Proc(msgspec.Struct):
    name: str
    pid: int
    program: str  # a word of its command line: a recycled pid is never signalled
    args: list[str] = msgspec.field(default_factory=list)
    log: str = ""
    ports: dict[str, int] = msgspec.field(default_factory=dict)


class _State(msgspec.Struct):
    """``DIR/state.json``: what ``up`` started (``down`` stops it)."""

    procs: list[_Proc]
    pg_data: str
    pg_port: int
    nats_port: int


def _say(msg: str) -> None:
    sys.stderr.write(f"cluster: {msg}\n")
    sys.stderr.flush()


# -- packages -------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _haproxy() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


def _nats_server() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


def ensure_packages() -> None:
    """Install the Debian packages that are missing (as root), or say which are."""
    need = [
        pkg
        for pkg, present in zip(
            DEBIAN_PACKAGES, (_pg_bin(), _nats_server(), _haproxy()), strict=True
        )
        if present is None
    ]
    if not need:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"cluster: missing {' '.join(need)} (apt-get install them as root)")
    _say(f"installing {' '.join(need)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


# -- processes ------------------------------------------------------------------------------


_CHILDREN: list[subprocess.Popen[bytes]] = []  # what this process started (kept referenced)


def _spawn(
    name: str,
    args: Sequence[str],
    log: Path,
    *,
    program: str,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> _Proc:
    """Start ``args`` in its own session (``up`` returns; the process stays), output to
    ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs = {"user": user, "group": grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name}
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env=env,
            **kwargs,  # type: ignore[call-overload]
        )
    _CHILDREN.append(proc)  # never collected while running (Popen would warn)
    started = _Proc(name, proc.pid, program, list(args), str(log))
    deadline = time.monotonic() + 2.0
    while not _alive(started) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # /proc shows the new program a moment after exec
    return started


def _alive(p: _Proc) -> bool:
    try:
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{p.pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        for child in _CHILDREN:  # ours: reap it (its Popen learns the exit status)
            if child.pid == p.pid:
                child.poll()
        return False
    return p.program.encode() in cmdline


def _signal(p: _Proc, sig: int) -> None:
    if _alive(p):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)


def _wait_gone(procs: Sequence[_Proc], timeout: float) -> list[_Proc]:
    deadline = time.monotonic() + timeout
    left = [p for p in procs if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def _wait_port(host: str, port: int, timeout: float, what: str, proc: _Proc) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        if not _alive(proc):
            raise RuntimeError(f"{what} exited; see {proc.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not listening on {host}:{port}; see {proc.log}")
        time.sleep(0.1)


# -- PostgreSQL -----------------------------------------------------------------------------


def _reachable_by(path: Path, user: str) -> bool:
    """Whether ``user`` can traverse every directory above ``path``."""
    uid = pwd.getpwnam(user).pw_uid
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == uid:
            continue
        if not st.st_mode & 0o001:
            return False
    return True


def _pg_data_dir(root: Path, user: str | None) -> Path:
    link = root / "postgresql"
    if link.is_symlink() or link.exists():
        return link.resolve()
    if user is None or _reachable_by(root, user):
        link.mkdir(mode=0o700)
        return link
    target = Path(tempfile.mkdtemp(prefix="gateway-cluster-pg-"))
    link.symlink_to(target)
    return target


def start_postgres(root: Path, port: int) -> tuple[_Proc, Path, str]:
    """Initialise (first time) and start PostgreSQL on 127.0.0.1:``port``; returns the
    process, its data directory and the gateway's URL."""
    bin_dir = _pg_bin()
    assert bin_dir is not None
    user = "postgres" if os.geteuid() == 0 else None
    data = _pg_data_dir(root, user)
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(data, pw.pw_uid, pw.pw_gid)
    log = root / "logs" / "postgresql.log"
    if not (data / "PG_VERSION").exists():
        _say(f"initdb {data}")
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "gateway",
                "-A",
                "trust",  # loopback only (listen_addresses below); a test cluster
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            user=user,
        )
    proc = _spawn(
        "postgresql",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "max_connections=300",
        ],
        log,
        program="postgres",
        user=user,
    )
    proc.ports = {"port": port}
    _wait_port("127.0.0.1", port, 60, "PostgreSQL", proc)
    # the database (once): createdb says so when it exists
    deadline = time.monotonic() + 30
    while True:
        r = subprocess.run(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "gateway",
                "gateway",
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0 or "already exists" in r.stderr:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"createdb failed: {r.stderr.strip()}")
        time.sleep(0.3)
    return proc, data, f"postgresql://gateway@127.0.0.1:{port}/gateway"


def start_nats(root: Path, port: int) -> tuple[_Proc, str]:
    server = _nats_server()
    assert server is not None
    store = root / "nats"
    store.mkdir(exist_ok=True)
    proc = _spawn(
        "nats",
        [server, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        root / "logs" / "nats.log",
        program="nats-server",
    )
    proc.ports = {"port": port}
    _wait_port("127.0.0.1", port, 30, "nats-server", proc)
    return proc, f"nats://127.0.0.1:{port}"


# -- HAProxy --------------------------------------------------------------------------------


def haproxy_config(
    host: str,
    tls_port: int,
    mqtt_tls_port: int,
    base_domain: str,
    nodes: Sequence[_Proc],
    admin_socket: Path,
) -> str:
    """The HAProxy configuration: TCP mode, SNI routing without terminating TLS, a health
    check of each node's management API, PROXY protocol v2 to the nodes; the runtime API
    on ``admin_socket`` (operators and tests drain a node with it)."""
    out = [
        "# generated by scripts/cluster (gateway/testing/cluster.py): do not edit",
        "global",
        f"    maxconn {_haproxy_maxconn()}  # two descriptors a connection, under the limit",
        f"    stats socket {admin_socket} mode 600 level admin",
        "    log stderr format short local0 warning",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    timeout connect 5s",
        "    timeout client 1h  # MQTT keep-alives and long-polls are the devices' business",
        "    timeout server 1h",
        "    timeout check 2s",
        "    retries 2",
        "    option redispatch",
        "",
    ]
    for name, port, key in (("tls", tls_port, "tls"), ("mqtt_tls", mqtt_tls_port, "mqtt_tls")):
        out += [
            f"frontend devices_{name}",
            f"    bind {host}:{port}",
            "    tcp-request inspect-delay 5s",
            "    # the TLS ClientHello is read, never terminated: client certificates and",
            "    # each connector's TLS policy stay the gateway's",
            "    tcp-request content accept if { req.ssl_hello_type 1 }",
            "    tcp-request content reject",
            f"    use_backend nodes_{name} if {{ req.ssl_sni -m end .{base_domain} }}",
            f"    use_backend nodes_{name} if {{ req.ssl_sni -m str {base_domain} }}",
            f"    default_backend nodes_{name}  # connectors' own domains (their certificates)",
            "",
            f"backend nodes_{name}",
            "    balance leastconn",
            "    option httpchk",
            "    http-check send meth GET uri /api/v1/health",
            "    http-check expect status 200",
            "    default-server inter 1s fastinter 500ms fall 2 rise 2 "
            "on-marked-down shutdown-sessions send-proxy-v2",
        ]
        for node in nodes:
            out.append(
                f"    server {node.name} 127.0.0.1:{node.ports[key]} "
                f"check port {node.ports['api']} addr 127.0.0.1"
            )
        out.append("")
    return "\n".join(out)


def _haproxy_maxconn() -> int:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 500_000
    return max(1000, (hard - 200) // 2)


def start_haproxy(root: Path, config: str) -> _Proc:
    haproxy = _haproxy()
    assert haproxy is not None
    cfg = root / "haproxy.cfg"
    cfg.write_text(config)
    subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], check=True)
    return _spawn(
        "haproxy",
        [haproxy, "-db", "-f", str(cfg)],
        root / "logs" / "haproxy.log",
        program="haproxy",
    )


# -- nodes ----------------------------------------------------------------------------------


def node_args(
    data: Path,
    name: str,
    *,
    store: str,
    bus: str,
    ports: dict[str, int],
    workers: int,
    trusted_proxy: str = "127.0.0.1",
    extra: Sequence[str] = (),
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--data",
        str(data),
        "--node-name",
        name,
        "--store",
        store,
        "--bus",
        bus,
        "--host",
        "127.0.0.1",
        "--tls-port",
        str(ports["tls"]),
        "--mqtt-tls-port",
        str(ports["mqtt_tls"]),
        "--api-port",
        str(ports["api"]),
        "--workers",
        str(workers),
        "--proxy-protocol",
        "tls,mqtt_tls",
        "--proxy-trusted",
        trusted_proxy,
        *extra,
    ]


def start_node(root: Path, proc: _Proc) -> _Proc:
    """(Re)start a node with the arguments it was first started with; wait until ready."""
    data = Path(proc.args[proc.args.index("--data") + 1])
    (data / "run.json").unlink(missing_ok=True)
    new = _spawn(proc.name, proc.args, Path(proc.log), program="gateway")
    new.ports = proc.ports
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (data / "run.json").exists():
        if not _alive(new):
            raise RuntimeError(f"{proc.name} exited; see {proc.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} not ready; see {proc.log}")
        time.sleep(0.1)
    return new


def _share_secrets(first: Path, other: Path) -> None:
    """What every node must have alike: the certificates, the admin token, the key of the
    secrets at rest (node 1 created them)."""
    other.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (other / "tls").exists():
        shutil.copytree(first / "tls", other / "tls")
    for name in ("admin.token", "secrets.key"):
        if (first / name).exists() and not (other / name).exists():
            shutil.copy2(first / name, other / name)


# -- up / down / status ---------------------------------------------------------------------


def load(root: Path) -> ClusterInfo:
    return msgspec.json.decode((root / "cluster.json").read_bytes(), type=ClusterInfo)


def _load_state(root: Path) -> _State | None:
    path = root / "state.json"
    if not path.exists():
        return None
    return msgspec.json.decode(path.read_bytes(), type=_State)


def _write(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(value), indent=2))
    tmp.replace(path)


def _node_ports(api_port_base: int, index: int) -> dict[str, int]:
    api = api_port_base + index - 1 if api_port_base else free_port()
    return {"tls": free_port(), "mqtt_tls": free_port(), "api": api}


def up(
    root: Path,
    nodes: int = 3,
    *,
    host: str = "127.0.0.1",
    tls_port: int = 8443,
    mqtt_tls_port: int = 8883,
    api_port_base: int = 9081,
    workers: int = 2,
    base_domain: str = "localhost",
    node_extra: Sequence[str] = (),
) -> ClusterInfo:
    """Start the cluster in ``root`` (see the module docstring); returns cluster.json."""
    root = root.absolute()
    previous = _load_state(root)
    if previous is not None and any(_alive(p) for p in previous.procs):
        raise SystemExit(f"cluster: already up in {root} (scripts/cluster down first)")
    ensure_packages()
    root.mkdir(parents=True, exist_ok=True)
    procs: list[_Proc] = []
    state = _State(procs, "", free_port(), free_port())
    try:
        pg, pg_data, pg_url = start_postgres(root, state.pg_port)
        procs.append(pg)
        state.pg_data = str(pg_data)
        _write(root / "state.json", state)
        nats, nats_url = start_nats(root, state.nats_port)
        procs.append(nats)
        _write(root / "state.json", state)
        extra = ["--base-domain", base_domain, *node_extra]
        node_procs: list[_Proc] = []
        for i in range(1, nodes + 1):
            name = f"node-{i}"
            data = root / name
            ports = _node_ports(api_port_base, i)
            args = node_args(
                data, name, store=pg_url, bus=nats_url, ports=ports, workers=workers, extra=extra
            )
            node_procs.append(
                _Proc(name, 0, "gateway", args, str(root / "logs" / f"{name}.log"), ports)
            )
        first = root / "node-1"
        _say(f"starting node-1 ({workers} workers)")
        node_procs[0] = start_node(root, node_procs[0])
        procs.append(node_procs[0])
        _write(root / "state.json", state)
        for i, p in enumerate(node_procs[1:], start=1):
            _share_secrets(first, root / p.name)
            _say(f"starting {p.name}")
            node_procs[i] = start_node(root, p)
            procs.append(node_procs[i])
            _write(root / "state.json", state)
        _say(f"starting HAProxy on {host}:{tls_port} and {host}:{mqtt_tls_port}")
        config = haproxy_config(
            host, tls_port, mqtt_tls_port, base_domain, node_procs, root / "haproxy.sock"
        )
        hap = start_haproxy(root, config)
        hap.ports = {"tls": tls_port, "mqtt_tls": mqtt_tls_port}
        procs.append(hap)
        _write(root / "state.json", state)
        _wait_port(host, tls_port, 30, "HAProxy", hap)
        _wait_port(host, mqtt_tls_port, 30, "HAProxy", hap)
    except BaseException:
        _stop(procs)
        raise
    info = ClusterInfo(
        haproxy=HaproxyInfo(host, tls_port, mqtt_tls_port),
        nodes=[NodeInfo(p.name, f"http://127.0.0.1:{p.ports['api']}", p.pid) for p in node_procs],
        admin_token=str(first / "admin.token"),
        ca=str(first / "tls" / "ca.pem"),
        postgresql=pg_url,
        nats=nats_url,
    )
    _write(root / "cluster.json", info)
    _wait_healthy(root, info)
    return info


def _wait_healthy(root: Path, info: ClusterInfo, timeout: float = 30.0) -> None:
    """Until HAProxy sees every node up (its checks need ``rise`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(ok for _name, ok, _detail in status(root, quiet=True)):
            return
        time.sleep(0.2)
    raise TimeoutError("the cluster is not healthy; scripts/cluster status says why")


def restart(root: Path, name: str) -> _Proc:
    """Start one of the cluster's processes again (after a test killed it), with the same
    arguments and ports; state.json is updated."""
    state = _load_state(root)
    assert state is not None
    for i, p in enumerate(state.procs):
        if p.name != name:
            continue
        if p.program == "gateway":
            new = start_node(root, p)
        else:
            new = _spawn(p.name, p.args, Path(p.log), program=p.program, user=_user_of(p))
            new.ports = p.ports
            _wait_port("127.0.0.1", p.ports["port"], 60, p.name, new)
        state.procs[i] = new
        _write(root / "state.json", state)
        if p.program == "gateway":
            info = load(root)
            for node in info.nodes:
                if node.name == name:
                    node.pid = new.pid
            _write(root / "cluster.json", info)
        return new
    raise KeyError(name)


def _user_of(p: _Proc) -> str | None:
    return "postgres" if p.program == "postgres" and os.geteuid() == 0 else None


def wait_gone(p: _Proc, timeout: float = 60.0) -> None:
    """Until ``p`` has exited."""
    if _wait_gone([p], timeout):
        raise TimeoutError(f"{p.name} (pid {p.pid}) still running")


def haproxy_command(root: Path, command: str) -> str:
    """One command to HAProxy's runtime API (e.g. ``set server nodes_tls/node-1 state
    drain``); its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(root.absolute() / "haproxy.sock"))
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def proc(root: Path, name: str) -> _Proc:
    state = _load_state(root)
    assert state is not None
    return next(p for p in state.procs if p.name == name)


def _stop(procs: Sequence[_Proc]) -> list[_Proc]:
    """Nodes first (SIGTERM: they drain), then HAProxy, NATS, PostgreSQL (fast shutdown)."""
    order = ["gateway", "haproxy", "nats-server", "postgres"]
    left: list[_Proc] = []
    for program in order:
        group = [p for p in procs if p.program == program]
        for p in group:
            _signal(p, signal.SIGINT if program == "postgres" else signal.SIGTERM)
        for p in _wait_gone(group, STOP_TIMEOUT_S):
            _say(f"{p.name} (pid {p.pid}) did not stop: SIGKILL")
            _signal(p, signal.SIGKILL)
            left.append(p)
    return _wait_gone(left, 10)


def down(root: Path) -> int:
    """Stop every process ``up`` started in ``root``.  Returns how many were running."""
    root = root.absolute()
    state = _load_state(root)
    if state is None:
        _say(f"nothing started in {root}")
        return 0
    running = [p for p in state.procs if _alive(p)]
    stuck = _stop(state.procs)
    if stuck:
        raise SystemExit(f"cluster: could not stop {', '.join(p.name for p in stuck)}")
    (root / "state.json").unlink()
    return len(running)


def status(root: Path, *, quiet: bool = False) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) per component; printed unless ``quiet``."""
    root = root.absolute()
    state = _load_state(root)
    rows: list[tuple[str, bool, str]] = []
    if state is None:
        rows.append(("cluster", False, f"not started in {root}"))
    else:
        info = load(root) if (root / "cluster.json").exists() else None
        for p in state.procs:
            ok = _alive(p)
            detail = f"pid {p.pid}" if ok else f"pid {p.pid} not running"
            if ok and p.program == "gateway":
                url = f"http://127.0.0.1:{p.ports['api']}/api/v1/health"
                try:
                    ok = httpx.get(url, timeout=2).status_code == 200
                    detail += f", {url} " + ("ok" if ok else "failing")
                except httpx.HTTPError as exc:
                    ok = False
                    detail += f", {url}: {exc}"
            rows.append((p.name, ok, detail))
        if info is not None:
            hp = info.haproxy
            for port in (hp.tls_port, hp.mqtt_tls_port):
                try:
                    with socket.create_connection((hp.host, port), 1):
                        rows.append((f"haproxy:{port}", True, f"{hp.host}:{port} accepts"))
                except OSError as exc:
                    rows.append((f"haproxy:{port}", False, f"{hp.host}:{port}: {exc}"))
    if not quiet:
        for name, ok, detail in rows:
            sys.stdout.write(f"{name:12} {'up' if ok else 'DOWN':5} {detail}\n")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help=f"where everything lives [{DEFAULT_DIR}]"
    )
    parser.add_argument("--nodes", type=int, default=3, help="gateway nodes [3]")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per node [2]")
    parser.add_argument("--host", default="127.0.0.1", help="HAProxy's address [127.0.0.1]")
    parser.add_argument("--tls-port", type=int, default=8443, help="HAProxy's TLS port [8443]")
    parser.add_argument("--mqtt-tls-port", type=int, default=8883, help="MQTT/TLS port [8883]")
    parser.add_argument(
        "--api-port-base",
        type=int,
        default=9081,
        help="node i's API port: base + i - 1; 0 any [9081]",
    )
    args = parser.parse_args(argv)
    root = Path(args.dir)
    if args.command == "up":
        info = up(
            root,
            args.nodes,
            host=args.host,
            tls_port=args.tls_port,
            mqtt_tls_port=args.mqtt_tls_port,
            api_port_base=args.api_port_base,
            workers=args.workers,
        )
        sys.stdout.write(json.dumps(msgspec.to_builtins(info), indent=2) + "\n")
        return 0
    if args.command == "down":
        n = down(root)
        _say(f"stopped {n} processes")
        return 0
    rows = status(root)
    return 0 if rows and all(ok for _n, ok, _d in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
