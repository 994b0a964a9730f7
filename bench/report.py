"""RESULTS.md and PNG plots from scenario rows (bench/results.json keeps the rows).

Ratios are gateway/peer for the same scenario, load and metric, from the same run.
"""

from __future__ import annotations

import contextlib
import operator
import platform
import re
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench import peers

ROOT = peers.ROOT
# Generators' own ceilings: servers that do no work, run with the same load in the same run.
CEILINGS = {"nullsink", "nginx"}
PEER_ORDER = [
    "nullsink",
    "nginx",
    "mosquitto",
    "mosquitto-persist",
    "amqtt",
    "aedes",
    "hypercorn",
    "uvicorn",
    "token",
    "gateway",
    "gateway-w1",
    "gateway-w2",
]
MAIN_METRIC = {
    "rate": "msg/s",
    "bytes_per_conn": "B",
    "seconds": "s",
    "p50": "ms",
    "p99": "ms",
    "cpu_per_msg": "µs",
}
_PER_RECORD = (
    " One PUBLISH per TLS record (one send per PUBLISH on plain TCP), as device libraries send"
    " them; `cpu_per_msg` = the server's CPU (whole process tree, /proc utime+stime) over the"
    " timed phase per message."
)
_BATCHED = (
    " Many PUBLISHes packed into each TLS record / send (the generator's batched framing, which"
    " devices do not use: it flatters servers that pay per read); for comparison only."
)
_HTTP = (
    " `POST /onep:v1/stack/alias` (58-byte form body), one request outstanding per connection,"
    " one `X-Exosite-CIK` identity per connection (load = connections; the devices are in the"
    " note); peers get the same request without a token.  rate = 2xx responses/s; p50/p99"
    " from the generator; `cpu_per_msg` = server CPU (whole process tree) per request;"
    " `nginx` (`return 204`, C, one process) is the generator's own ceiling."
)
EXPLAIN = {
    "mqtt_qos0": "MQTT QoS 0 PUBLISH, 50-byte payload, plain TCP; rate = publishes the"
    " server had processed (confirmed by in-stream PINGREQ/PINGRESP)." + _PER_RECORD,
    "mqtt_qos0_tls": "As mqtt_qos0 over TLS 1.3 (ECDSA P-256 certificate).",
    "mqtt_qos1": "MQTT QoS 1 PUBLISH, 50-byte payload, plain TCP, 100 in flight per connection"
    " up to 100 devices (10,000 in flight in total above: 10 each at 1,000 devices);"
    " rate = PUBACKs/s; p50/p99 = PUBACK latency." + _PER_RECORD,
    "mqtt_qos1_tls": "As mqtt_qos1 over TLS 1.3 (ECDSA P-256 certificate).",
    "mqtt_qos0_batched": "As mqtt_qos0, batched." + _BATCHED,
    "mqtt_qos0_tls_batched": "As mqtt_qos0_tls, batched." + _BATCHED,
    "mqtt_qos1_batched": "As mqtt_qos1, batched." + _BATCHED,
    "mqtt_qos1_tls_batched": "As mqtt_qos1_tls, batched." + _BATCHED,
    "http_writes": "wrk, HTTP/1.1 keep-alive, plain (gateway: dev port, Host"
    " `<cid>.devmode-m2.localhost`)." + _HTTP,
    "http_writes_tls": "wrk, HTTP/1.1 keep-alive over TLS 1.3 (gateway: device TLS port, SNI and"
    " Host `<cid>.m2.localhost`)." + _HTTP,
    "http2_writes_tls": "h2load, HTTP/2 over TLS 1.3 (ALPN h2), one stream at a time per"
    " connection, one h2load process per device (uvicorn has no HTTP/2)." + _HTTP,
    "http_auth_tls": "wrk as http_writes_tls, one gateway, the same run: `gateway` rows are"
    " writes by password devices (HTTP Basic identity:password, scrypt once per device and"
    " process, then the remembered proof), `token` rows by token devices (X-Exosite-CIK);"
    " each side warms up one second unrecorded.  The ratio is password/token.  `nginx`"
    " (`return 204` over TLS) is the generator's ceiling: the same wrk load, interleaved with"
    " both sides.",
    "tls_connects": "TLS 1.3 handshake + MQTT CONNECT/CONNACK, 64 in progress;"
    " rate = connections/s.",
    "bench_tls": "bench/bench_tls.py (written by the TLS owner), output tail.",
    "idle_memory": "Server RSS growth (/proc/PID/status VmRSS) per idle MQTT connection.",
    "idle_memory_tls": "As idle_memory over TLS 1.3 (the gateway's MQTT-only TLS port).",
    "longpoll_memory": "Server RSS growth per waiting HTTP long-poll (`Request-Timeout: 300000`,"
    " one per device, dev plain port), then a value set for each device must wake its poll.",
    "reconnect_storm": "10,000 MQTT clients connect at the same instant (no concurrency cap);"
    " seconds to the last CONNACK (connects still pending after 60 s count as errors).",
    "control_fanout": "A value set for each of N connected devices; seconds until every device"
    " received its PUBLISH (gateway: PATCH …/state per device; mosquitto: N subscribers, one"
    " publisher).",
    "mgmt_listing": "GET devices filtered by tag (first page of 100; 1 device in 1,000 tagged),"
    " with 1,000,000 devices in the connector (100,000 with --quick); latency per request.",
    "codec": "bench/bench_codec.py (pytest-benchmark): speed-up of the compiled (Cython) twin"
    " over the pure-Python one per group, from the median times.",
    "node_hold_tls": "Idle MQTT/TLS devices, each with its own identity, held at once by one"
    " `gateway serve` started as the README says (the default node: supervisor, store owner"
    " and `--workers auto`); the generator runs in several processes (<= 9,000 sockets each)"
    " from source addresses 127.0.0.2-127.0.0.9, handshakes paced (at most 240 in flight"
    " and 600 new per second over all its processes, so that none waits past the gateway's"
    " handshake deadline).  `held` and `refused` count devices (a refusal's reason, from the"
    " generator and the gateway's own counters, is in the note); `connect_seconds` is the"
    " time to hold them all.  Memory is summed over every process of the gateway after"
    " they are held: RSS counts the pages the forked processes share once per process, PSS"
    " splits them; `*_growth_per_device` is the increase over the idle node divided by the"
    " devices held.  The generator's ceiling does not apply: nothing is timed but the"
    " connect phase, and its pacing is stated.",
    "node_qos1": "MQTT QoS 1 from 1,000 devices (window 10 each), plain, one PUBLISH per"
    " record: `gateway serve --workers 1` vs `--workers 2`.  `owner_cpu_per_msg` = the store"
    " owner's CPU per message.  `nullsink` is the generator's ceiling: the same load (1,000"
    " devices, window 10, one generator process) against the null sink in the same run."
    + _PER_RECORD,
    "node_qos1_batched": "As node_qos1, batched." + _BATCHED,
    "node_http": "wrk, 256 connections of one device each, plain HTTP/1.1 writes:"
    " `--workers 1` vs `--workers 2`; `nginx` runs the same wrk load in the same run." + _HTTP,
}
NODE_SCALING = [
    "## Multi-process node: what limits the scaling on this machine",
    "",
    "The `node_*` scenarios run `gateway serve --workers 1` and `--workers 2` on a 2-core"
    " machine that also runs the load generator.  Read them with these limits in mind:",
    "",
    "- **Two cores for everything.**  The generator (one Python process for MQTT, wrk's"
    " threads for HTTP) takes its `loadgen_cpu` share of the same two cores; a second worker"
    " can only use what is left of the second core, so 1 → 2 workers cannot approach 2x here,"
    " and with `--workers auto` (3 workers for 40,000 devices under a 20,000-file limit) the"
    " processes outnumber the cores.",
    "- **One writer.**  Every write goes to the store owner (one SQLite writer thread, group"
    " commit) over a Unix socket: `owner_cpu_per_msg` is the owner's CPU per message (frame"
    " decode, the op handler's SQL, its share of the commit, the answer frame), and 1e6 /"
    " `owner_cpu_per_msg` messages/s is the node's write ceiling on any number of cores."
    "  The hop itself shows as the difference in `cpu_per_msg` between 1 and 2 workers.",
    "- **On a 16-core host** `--workers auto` starts 16 workers: TLS, MQTT and HTTP work"
    " (most of `cpu_per_msg`) spreads over them, so throughput grows with the cores until the"
    " store owner's core is full, at about 1e6 / `owner_cpu_per_msg` writes/s; beyond that the"
    " next step is the cluster's store (PostgreSQL, docs/architecture.md).  Idle devices cost"
    " memory, not CPU: `node_hold_tls`'s bytes per device times the fleet, plus a fixed ~55"
    " MiB per process.",
    "",
]
CLUSTER_HEADING = "## Cluster: 1, 2 and 3 nodes on this machine"


def cluster_section(doc: dict[str, Any] | None) -> list[str]:
    """The cluster figures (bench/cluster_scaling.py writes ``bench/results_cluster.json``)."""
    if not doc:
        return []
    lines = [
        CLUSTER_HEADING,
        "",
        f"`{doc['command']}` at {doc['when']}, load average before {doc['loadavg']}: each row"
        " a fresh cluster (gateway/testing/cluster.py: PostgreSQL, NATS JetStream, HAProxy"
        f" with PROXY v2, nodes of {doc['workers']} worker(s)), {doc['devices']} devices"
        " writing through HAProxy's MQTT/TLS port at QoS 1 (one write in flight each, no"
        f" pause), measured over {doc['seconds']} s.  `µs/write` is the CPU each part spent"
        " per acknowledged write (/proc utime+stime of its processes).",
        "",
        "**One machine:** PostgreSQL, NATS, HAProxy, every node and the generator share the"
        " same 2 cores, so adding nodes here adds processes competing for those cores, not"
        " capacity: the rate grows with the nodes only while the run is bound by latency"
        " (more nodes serve more of the devices' single in-flight writes at once) and the"
        " cores are not full, and each node adds its fixed costs and its NATS fan-out to the"
        " same cores.  What carries to a real cluster,"
        " where each node has its own cores, is the CPU per write of each part"
        " (docs/scale.md).  Sum the `cores` columns: far below the machine's 2 cores, the run"
        " was bound by latency (one write in flight per device, every process waiting its turn"
        " for a core the machine's other work holds: see the load average), not by the"
        " cluster's own CPU.",
        "",
        "**The generator's ceiling** is its own CPU per write, measured in the same run:"
        " `generator µs/write` (the MQTT/TLS devices are Trio tasks in the one Python"
        " process of bench/cluster_scaling.py, so it can use one core at most; /proc), and"
        " from it `generator ceiling` = 1e6 / `generator µs/write`, the writes per second"
        " that process could drive on a full core at this load (the per-core ceiling the MQTT"
        " scenarios report as rate / `loadgen_cpu`).  A ceiling far above `writes/s`, with"
        " `generator cores` far below 1, means the generator did not cap the cluster.  The"
        " cluster scenario has no null-sink row (a null sink behind HAProxy measures HAProxy,"
        " not the generator); this is its ceiling figure.",
        "",
        "| nodes | writes/s | nodes µs/write | PostgreSQL µs/write | NATS µs/write |"
        " HAProxy µs/write | generator µs/write | generator cores | generator ceiling"
        " (writes/s per core) | nodes cores | PostgreSQL cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['nodes']} | {r['writes_per_s']:,.0f} | {r['nodes_us_per_write']:,.0f} |"
        f" {r['postgresql_us_per_write']:,.0f} | {r['nats_us_per_write']:,.0f} |"
        f" {r['haproxy_us_per_write']:,.0f} | {r['generator_us_per_write']:,.0f} |"
        f" {r['generator_cores']:.2f} | {_per_core(r['generator_us_per_write'])} |"
        f" {r['nodes_cores']:.2f} | {r['postgresql_cores']:.2f} |"
        for r in doc["rows"]
    ]
    return [*lines, ""]


def _per_core(us_per_write: float) -> str:
    return f"{1e6 / us_per_write:,.0f}" if us_per_write > 0 else "—"


def splice_cluster(md: Path, doc: dict[str, Any]) -> None:
    """Put the cluster section into an existing RESULTS.md (replacing an older one, else
    after the node section) without rendering the rest again."""
    text = md.read_text()
    section = "\n".join(cluster_section(doc))
    if CLUSTER_HEADING in text:
        start = text.index(CLUSTER_HEADING)
        end = text.find("\n## ", start + 1)
        rest = text[end + 1 :] if end >= 0 else ""
    else:
        node = text.index(NODE_SCALING[0])
        start = text.index("\n## ", node + 1) + 1
        rest = text[start:]
    md.write_text(text[:start] + section + "\n" + rest)


_RETIRED_WHY = (
    " Measured before the device-scale suite, with a generator the suite no longer uses; kept"
    " for history until its successor is run, and never used for a target."
)
# Retired scenario -> (successor whose run drops it, what it measured).
RETIRED = {
    "mqtt_qos0_legacy": (
        "mqtt_qos0",
        "MQTT QoS 0, many PUBLISHes per send (~64 KiB buffers), plain." + _RETIRED_WHY,
    ),
    "mqtt_qos1_legacy": (
        "mqtt_qos1",
        "MQTT QoS 1, plain, 32 in flight per connection (4 at 1,000), refilled in half-window"
        " sends (many PUBLISHes per send)." + _RETIRED_WHY,
    ),
    "http_writes_legacy": (
        "http_writes",
        "HTTP/1.1 writes driven by the retired Python generator, which capped the peers (it"
        " measured bare hypercorn at 4.6k req/s where wrk measures 8.8k)." + _RETIRED_WHY,
    ),
    "http_writes_tls_legacy": (
        "http_writes_tls",
        "As http_writes_legacy over TLS." + _RETIRED_WHY,
    ),
}
PROFILES = ROOT / "bench" / "profiles.md"


class Target(NamedTuple):
    """One benchmark target.  ``peer`` set: the figure is gateway/peer of ``metric`` (same
    scenario and load); else it is ``target``'s own ``metric``.  Every measured load (or
    group) must pass; ``loads`` restricts which count (empty: all)."""

    key: str  # also the section of bench/profiles.md that explains a miss
    text: str
    scenario: str
    metric: str
    threshold: float
    cmp: str  # ">=" or "<="
    peer: str = ""
    target: str = "gateway"
    loads: tuple[str, ...] = ()
    unit: str = "x"


TARGETS = [
    Target("mqtt-tls-qos0", "MQTT over TLS, one PUBLISH per record, QoS 0, 1 and 100 devices:"
           " >= 0.6x mosquitto over TLS", "mqtt_qos0_tls", "rate", 0.6, ">=", peer="mosquitto",
           loads=("1", "100")),
    Target("mqtt-tls-qos1", "MQTT over TLS, one PUBLISH per record, QoS 1 (window 100), 1 and"
           " 100 devices: >= 0.6x mosquitto over TLS", "mqtt_qos1_tls", "rate", 0.6, ">=",
           peer="mosquitto", loads=("1", "100")),
    Target("mqtt-plain-qos0", "MQTT plain, one PUBLISH per send, QoS 0, 1 and 100 devices:"
           " >= 0.8x mosquitto", "mqtt_qos0", "rate", 0.8, ">=", peer="mosquitto",
           loads=("1", "100")),
    Target("mqtt-plain-qos1", "MQTT plain, one PUBLISH per send, QoS 1 (window 100), 1 and 100"
           " devices: >= 0.8x mosquitto", "mqtt_qos1", "rate", 0.8, ">=", peer="mosquitto",
           loads=("1", "100")),
    Target("mqtt-qos1-1000", "MQTT QoS 1, 1,000 devices, plain: >= 0.5x mosquitto",
           "mqtt_qos1", "rate", 0.5, ">=", peer="mosquitto", loads=("1000",)),
    Target("mqtt-tls-qos1-1000", "MQTT QoS 1, 1,000 devices, TLS: >= 0.5x mosquitto over TLS",
           "mqtt_qos1_tls", "rate", 0.5, ">=", peer="mosquitto", loads=("1000",)),
    Target("http-plain-hypercorn", "HTTP device writes (204 after the commit), 32 connections,"
           " plain: >= 2.0x bare hypercorn", "http_writes", "rate", 2.0, ">=", peer="hypercorn",
           loads=("32",)),
    Target("http-plain-uvicorn", "HTTP device writes, 32 connections, plain: >= 0.3x bare"
           " uvicorn+httptools", "http_writes", "rate", 0.3, ">=", peer="uvicorn",
           loads=("32",)),
    Target("http-tls-hypercorn", "HTTP device writes, 32 connections, TLS: >= 2.0x bare"
           " hypercorn", "http_writes_tls", "rate", 2.0, ">=", peer="hypercorn", loads=("32",)),
    Target("http-tls-uvicorn", "HTTP device writes, 32 connections, TLS: >= 0.3x bare"
           " uvicorn+httptools", "http_writes_tls", "rate", 0.3, ">=", peer="uvicorn",
           loads=("32",)),
    Target("http-password", "HTTP device writes by password devices, 32 connections, TLS:"
           " >= 0.8x token devices in the same run", "http_auth_tls", "rate", 0.8, ">=",
           peer="token", loads=("32",)),
    Target("idle-tls", "<= 16 KB resident per idle TLS device, 19,000 held", "idle_memory_tls",
           "bytes_per_conn", 16384.0, "<=", loads=("19000",), unit=" B"),
    Target("idle-plain", "<= 4 KB resident per idle plain device, 19,000 held", "idle_memory",
           "bytes_per_conn", 4096.0, "<=", loads=("19000",), unit=" B"),
    # Earlier targets that the ones above do not replace.
    Target("qos0-amqtt", "QoS 0 persisted writes >= 10x amqtt", "mqtt_qos0", "rate", 10.0, ">=",
           peer="amqtt"),
    Target("codec", "compiled codec >= 10x its pure-Python twin on decode", "codec", "speedup",
           10.0, ">=", target="compiled/pure",
           loads=("decode 1000 x 50-byte QoS0 PUBLISH", "decode 1000 x 50-byte QoS1 PUBLISH")),
    Target("tls-handshakes", "TLS handshakes >= 0.7x mosquitto", "tls_connects", "rate", 0.7,
           ">=", peer="mosquitto"),
    Target("reconnect-storm", "reconnect storm of 10,000 devices with zero failures",
           "reconnect_storm", "errors", 0.0, "<=", loads=("10000",), unit=""),
    Target("node-hold-40k", "40,000 idle MQTT/TLS devices held by the default `gateway"
           " serve`, 0 refused", "node_hold_tls", "refused", 0.0, "<=", loads=("40000",),
           unit=" refused"),
]  # fmt: skip
_CMP: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


def _figures(t: Target, rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    val = {
        (r["target"], r["load"]): r["value"]
        for r in rows
        if r["scenario"] == t.scenario and r["metric"] == t.metric and r["value"] is not None
    }
    out = []
    for (target, load), v in sorted(val.items(), key=lambda kv: (len(kv[0][1]), kv[0][1])):
        if target != t.target or (t.loads and load not in t.loads):
            continue
        if not t.peer:
            out.append((load, float(v)))
        elif val.get((t.peer, load)):
            out.append((load, float(v) / float(val[(t.peer, load)])))
    return out


def _slug(heading: str) -> str:
    """The anchor GitHub-flavoured Markdown gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _profile_sections() -> dict[str, tuple[str, str]]:
    """``## key: title`` sections of bench/profiles.md: key -> (anchor, body)."""
    if not PROFILES.exists():
        return {}
    parts = re.split(r"^## ", PROFILES.read_text(), flags=re.M)[1:]
    out = {}
    for part in parts:
        heading, _, body = part.partition("\n")
        out[heading.split(":", 1)[0].strip()] = (_slug(heading), body.strip())
    return out


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The Targets section: each target, its figure(s), met / missed / not measured, and
    for every target missed the profile summary from bench/profiles.md.  A target whose
    figure (or its peer's) was not measured in the current scenarios says so: it is never
    taken from a retired scenario."""
    sections = _profile_sections()
    lines = [
        "## Targets",
        "",
        "The targets against the figures below (every listed load must be measured and"
        " pass; a ratio is gateway/peer from the same run).  Why a target is missed and what"
        " would close it: [profiles.md](profiles.md), summarised below the table.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    missed = []
    for t in TARGETS:
        figs = _figures(t, rows)
        absent = [load for load in t.loads if load not in {f[0] for f in figs}]
        failed = [load for load, v in figs if not _CMP[t.cmp](v, t.threshold)]
        if failed:
            verdict = "**missed**"
        elif not figs:
            verdict = "not measured"
        elif absent:
            verdict = f"not measured at {', '.join(absent)}"
        else:
            verdict = "**met**"
        shown = ", ".join(
            f"{load}: {v:,.0f}{t.unit}"
            if t.unit.strip() in ("B", "refused") or not t.unit
            else f"{load}: {v:.2f}{t.unit}"
            for load, v in figs
        )
        if failed:
            missed.append(t)
        lines.append(f"| {t.text} | {shown or '—'} | {verdict} |")
    lines.append("")
    for t in missed:
        anchor, body = sections.get(t.key, ("", "(no profile summary in bench/profiles.md yet)"))
        lines += [
            f"### {t.text} — missed",
            "",
            f"From [profiles.md](profiles.md#{anchor}):" if anchor else "",
            "",
            body,
            "",
        ]
    return lines


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "absent"


def machine_facts() -> dict[str, str]:
    """nproc, CPU model, kernel, Python and peer versions (what a reader needs to compare)."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    pip = _sh([str(Path(peers.PY).with_name("pip")), "show", "hypercorn", "uvicorn", "httptools"])
    versions = dict(re.findall(r"^Name: (\S+)\nVersion: (\S+)", pip, flags=re.M))
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    wrk = (_sh(["wrk", "-v"]) or "absent").splitlines()[0].split(" [")[0]
    h2load = (_sh(["h2load", "--version"]) or "absent").splitlines()[0]
    nginx = "absent"
    with contextlib.suppress(OSError):
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
        nginx = out.stderr.strip().removeprefix("nginx version: ")
    return {
        "nproc": _sh(["nproc"]),
        "cpu": cpu,
        "memory": f"{int(mem) // 1024} MiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": peers.mosquitto_version(),
        "amqtt": peers.amqtt_version(),
        "aedes": peers.aedes_version(),
        "hypercorn": versions.get("Hypercorn", versions.get("hypercorn", "?")),
        "uvicorn": f"{versions.get('uvicorn', '?')} (httptools {versions.get('httptools', '?')})",
        "wrk": wrk,
        "h2load": h2load,
        "nginx": nginx,
        "openssl": _sh(["openssl", "version"]) or "absent",  # wrk's TLS threads depend on it
        "loadavg_at_start": Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__(),
    }


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if unit.endswith("/s") or unit == "B" or abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


RATE_UNIT = {
    "http_writes": "req/s",
    "http_writes_tls": "req/s",
    "http2_writes_tls": "req/s",
    "http_auth_tls": "req/s",
    "http_writes_legacy": "req/s",
    "http_writes_tls_legacy": "req/s",
    "tls_connects": "conn/s",
}


def _load_key(load: str) -> tuple[int, str]:
    return (int(load) if load.isdigit() else 0, load)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_key[(r["target"], r["load"])][r["metric"]] = r
    metrics = [
        m
        for m in [
            "rate",
            "cpu_per_msg",  # beside the throughput it costs
            "speedup",
            "seconds",
            "bytes_per_conn",
            "errors",
            "p50",
            "p99",
            "server_cpu",
            "loadgen_cpu",
            "exit",
            "owner_cpu_per_msg",  # node_qos1, node_http: the store owner's share
            # node_hold_tls: devices held and refused, and memory per device
            "held",
            "refused",
            "connect_seconds",
            "rss_per_device",
            "rss_growth_per_device",
            "pss_per_device",
            "pss_growth_per_device",
        ]
        if any(m in d for d in by_key.values())
    ]
    # The generator's own ceiling at the same load, beside every figure (same run).
    ceiling = {
        load: d["rate"]["value"]
        for (t, load), d in by_key.items()
        if t in CEILINGS and "rate" in d and d["rate"]["value"] is not None
    }
    head = [
        "target",
        "load",
        *[f"{m} ({_unit(rows, m)})" if _unit(rows, m) else m for m in metrics],
        *(["generator ceiling"] if ceiling else []),
        "runs",
        "note",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def order(k: tuple[str, str]) -> tuple[int, int, str]:
        t, load = k
        idx = PEER_ORDER.index(t) if t in PEER_ORDER else 99
        return (int(load) if load.isdigit() else 0, idx, t)

    for key in sorted(by_key, key=order):
        d = by_key[key]
        main = next((d[m] for m in metrics if m in d), {})
        note = next((d[m]["note"] for m in d if d[m].get("note")), "")
        note = note.replace("\n", " ").replace("|", "\\|")
        if "```" in note:
            note = "see below"
        cells = [
            key[0],
            key[1],
            *[_fmt(d[m]["value"], d[m]["unit"]) if m in d else "" for m in metrics],
            *([_fmt(ceiling.get(key[1]), "/s")] if ceiling else []),
            ", ".join(_fmt(x, main.get("unit", "")) for x in main.get("runs", [])),
            note,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _unit(rows: list[dict[str, Any]], metric: str) -> str:
    return next((r["unit"] for r in rows if r["metric"] == metric and r["unit"]), "")


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """gateway/peer lines for every (load, metric) both measured."""
    val = {(r["target"], r["load"], r["metric"]): r["value"] for r in rows}
    out = []
    for (t, load, m), v in sorted(val.items()):
        if t != "gateway" or v is None or m not in MAIN_METRIC:
            continue
        for peer in PEER_ORDER:
            pv = val.get((peer, load, m))
            if peer != "gateway" and peer not in CEILINGS and pv:
                out.append(f"| {load} | {m} | {peer} | {v / pv:.2f} |")
    if not out and any(t == "gateway-w2" for t, _l, _m in val):
        return _worker_ratios(val)
    if not out:
        if not any(r["target"] != "gateway" and r["target"] not in CEILINGS for r in rows):
            return ["Gateway only: no peer has an equivalent operation."]
        return ["No gateway/peer ratio yet: the gateway side of this scenario was skipped."]
    return ["| load | metric | peer | gateway/peer |", "|---|---|---|---|", *out]


def _worker_ratios(val: dict[tuple[str, str, str], Any]) -> list[str]:
    """The node scenarios compare the gateway with itself: 2 workers against 1."""
    out = [
        f"| {load} | {m} | {v / val[('gateway-w1', load, m)]:.2f} |"
        for (t, load, m), v in sorted(val.items())
        if t == "gateway-w2"
        and v is not None
        and m in MAIN_METRIC
        and val.get(("gateway-w1", load, m))
    ]
    if not out:
        return ["No ratio yet: one of the worker counts was skipped."]
    return ["| load | metric | gateway-w2/gateway-w1 |", "|---|---|---|", *out]


def ceiling(rows: list[dict[str, Any]]) -> list[str]:
    """The generator's own ceiling: null-sink rate, and messages per generator CPU-second
    (what one generator core could drive if the server were free)."""
    val = {(r["target"], r["load"], r["metric"]): r["value"] for r in rows}
    out = []
    for (t, load, m), v in sorted(val.items(), key=lambda kv: (kv[0][0], _load_key(kv[0][1]))):
        if m != "rate" or v is None or not load.isdigit():
            continue
        cpu = val.get((t, load, "loadgen_cpu"))
        per_core = f"{v / cpu:,.0f}" if cpu else "—"
        out.append(f"| {t} | {load} | {v:,.0f} | {per_core} |")
    if not out:
        return []
    return [
        "Generator ceiling (same run): measured rate and the rate per generator CPU-core"
        " (rate / loadgen_cpu); a per-core figure far above every server's rate means the"
        " generator was not the bottleneck.",
        "",
        "| target | load | rate | per generator core |",
        "|---|---|---|---|",
        *out,
        "",
    ]


def plot(scenario: str, rows: list[dict[str, Any]], outdir: Path) -> list[Path]:
    """Throughput vs load and (if measured) latency vs load, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for metrics, ylabel, suffix in (
        (("rate",), "per second", "throughput"),
        (("p50", "p99"), "ms", "latency"),
    ):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for r in rows:
            if r["metric"] in metrics and r["value"] is not None and r["load"].isdigit():
                series[f"{r['target']} {r['metric']}" if len(metrics) > 1 else r["target"]].append(
                    (int(r["load"]), r["value"])
                )
        if not series or all(len(v) < 2 for v in series.values()):
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        targets = sorted({label.split(" ")[0] for label in series})
        for label, pts in sorted(series.items()):
            pts.sort()
            target = label.split(" ")[0]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                label=label,
                color=f"C{targets.index(target) % 10}",  # one colour per server
                linestyle="--" if label.endswith("p99") else "-",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("devices / connections")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{scenario}: {suffix}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        outdir.mkdir(parents=True, exist_ok=True)
        path = outdir / f"{scenario}_{suffix}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    return made


def write(results: dict[str, Any], out: Path) -> None:
    """Render RESULTS.md (and plots next to it, in plots/) from the results document."""
    lines = [
        "# Benchmark results",
        "",
        "Produced by `scripts/bench` (bench/run.py); do not edit by hand — rerun instead.",
        "Every server and the load generators ran on this one machine, on 127.0.0.1, in the",
        "same run.  Values are medians over the listed runs.  Ratios are gateway/peer.",
        "",
        "## Machine and run",
        "",
    ]
    for scen_name, meta in results["runs"].items():
        lines.append(
            f"- `{scen_name}`: `{meta['command']}` at {meta['when']},"
            f" {meta['repeats']} run(s) of {meta['duration']} s, load average before"
            f" {meta['loadavg']}"
        )
    lines += ["", "| fact | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results["machine"].items()]
    lines += [
        "",
        "Caveat: this machine is shared with other work (test suites of other engineers may run",
        "at the same time), so absolute numbers are noisy; ratios from one run are the figure",
        "to read.  `server_cpu` is the server's CPU use in cores during the run and",
        "`loadgen_cpu` the generator's: a server near 1.0 core (single-threaded peers) is the",
        "bottleneck.  `cpu_per_msg` is the server's CPU time per message or request (its whole",
        "process tree, /proc utime+stime).  The `nullsink` (MQTT) and `nginx` (HTTP) rows are",
        "the generator's own ceiling on this machine, repeated beside every figure of the same",
        "load as `generator ceiling`: a peer close to it was capped by the generator.",
        "",
    ]
    by_scen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results["rows"]:
        by_scen[r["scenario"]].append(r)
    plots_dir = out.parent / "plots"
    absent = [s for s in EXPLAIN if s not in by_scen and s != "bench_tls"]
    retired = [s for s in by_scen if s in RETIRED]
    if absent or retired:
        lines += [
            "> **Note: not every scenario of the current suite has figures yet.**"
            + (" Not measured: " + ", ".join(f"`{s}`" for s in absent) + "." if absent else "")
            + (
                " The figures under *Retired figures* were measured with earlier generators"
                " (batched MQTT records, a Python HTTP generator that capped the peers); they"
                " are not comparable and no target uses them."
                if retired
                else ""
            ),
            "",
        ]
    lines += targets(results["rows"])
    lines += NODE_SCALING
    cluster_json = out.parent / "results_cluster.json"
    if cluster_json.exists():
        import json

        lines += cluster_section(json.loads(cluster_json.read_text()))
    current = [s for s in EXPLAIN if s in by_scen]
    others = sorted(s for s in by_scen if s not in EXPLAIN and s not in RETIRED)
    for scen in [*current, *others, *retired]:
        rows = by_scen[scen]
        if retired and scen == retired[0]:
            lines += [
                "# Retired figures",
                "",
                "Kept from earlier runs until their successor scenario runs; not comparable"
                " with the figures above and never used for a target.",
                "",
            ]
        if scen in RATE_UNIT:
            rows = [r | {"unit": RATE_UNIT[scen]} if r["metric"] == "rate" else r for r in rows]
        explain = EXPLAIN.get(scen) or RETIRED.get(scen, ("", ""))[1]
        lines += [f"## {scen}", "", explain, "", *_table(rows), ""]
        for r in rows:
            if "```" in r.get("note", ""):
                lines += [r["note"], ""]
        if scen not in ("bench_tls", "codec"):
            lines += ["Ratios:", "", *ratios(rows), ""]
        if any(r["target"] in CEILINGS for r in rows):
            lines += ceiling(rows)
        for p in plot(scen, rows, plots_dir):
            lines += [f"![{p.stem}](plots/{p.name})", ""]
    out.write_text("\n".join(lines).rstrip() + "\n")
