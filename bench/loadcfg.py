"""Load-generator configuration and result types shared by the MQTT and HTTP generators."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LOOPBACK = "127.0.0.1"
MAX_CONNS_PER_PROCESS = 9_000
RECV_SIZE = 262_144
QOS0_BUFFER_BYTES = 65_536
PACKET_ID_SPACE = 0xFFFF  # ids 1..65535 (§2.3.1: 0 is not a valid packet id)


def require_loopback_source(host: str) -> str:
    """A source address must be in 127.0.0.0/8 (spreading connections over source addresses
    lifts the ~28,000 ephemeral ports one address has toward one server port)."""
    parts = host.split(".")
    if len(parts) != 4 or parts[0] != "127" or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"load generator refuses source address {host!r}: only 127.0.0.0/8")
    return host


def require_loopback(host: str) -> str:
    """Refuse every target but 127.0.0.1: a load generator must not be pointed elsewhere."""
    if host != LOOPBACK:
        raise ValueError(f"load generator refuses host {host!r}: only {LOOPBACK} is allowed")
    return host


@dataclass(frozen=True)
class Credentials:
    """CONNECT identity of one connection (``username=""`` sends the empty-username flag)."""

    client_id: str = ""
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class MqttLoad:
    """One load run.  ``credentials`` is per connection; empty means unique anonymous ids."""

    port: int
    host: str = LOOPBACK
    connections: int = 1
    qos: int = 0
    window: int = 32
    duration: float = 2.0
    count: int = 0
    payload_size: int = 50
    topic: str = "$resource/data_in"
    tls: bool = False
    server_hostname: str | None = None
    cafile: str | None = None
    alpn: tuple[str, ...] = ()
    processes: int = 0
    credentials: tuple[Credentials, ...] = ()
    connect_concurrency: int = 256  # connections in progress (TCP, TLS, CONNECT) per worker
    connect_rate: float = 0.0  # new connections per second over all workers; 0 = unpaced
    connect_timeout: float = 60.0
    drain_timeout: float = 10.0
    keepalive: int = 600
    subscribe_prefix: str = ""
    # TLS framing: one TLS record per PUBLISH (what device clients send), sealed before the
    # timed phase up to tls_prebuild_records per worker; False = 16 KiB records of many
    # PUBLISHes each (the *_batched scenarios).  Plain TCP has no records: no difference.
    per_record: bool = True
    tls_prebuild_records: int = 2_000_000
    source_hosts: tuple[str, ...] = ()  # connection i binds source_hosts[i % n] (127.0.0.x)

    def __post_init__(self) -> None:
        require_loopback(self.host)
        for src in self.source_hosts:
            require_loopback_source(src)
        if self.qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if self.connections < 1 or self.window < 1 or self.duration <= 0:
            raise ValueError("connections, window and duration must be positive")
        if self.connect_rate < 0 or self.connect_concurrency < 1:
            raise ValueError("connect_rate must be >= 0 and connect_concurrency positive")
        if self.credentials and len(self.credentials) != self.connections:
            raise ValueError("credentials must be empty or one per connection")

    def process_count(self) -> int:
        """Workers: enough to stay under the fd cap, at least the CPU count when asked (0)."""
        floor = -(-self.connections // MAX_CONNS_PER_PROCESS)
        wanted = self.processes or min(os.cpu_count() or 1, self.connections)
        return max(floor, min(wanted, self.connections))


@dataclass
class LoadResult:
    """Totals over all workers.  ``rate`` counts acked (QoS 1) or drained (QoS 0) messages."""

    connections: int = 0
    connect_errors: int = 0
    connect_seconds: float = 0.0
    sent: int = 0
    acked: int = 0
    elapsed: float = 0.0
    drained: bool = True
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    qos: int = 0
    # Filled by the scenario, not the generator: the server's CPU seconds (whole process
    # tree, /proc) over the timed phase, for the CPU-per-message figure.
    server_cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        done = self.acked if self.qos else self.sent
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"] = self.rate
        return d


def weighted_percentiles(
    lat: Sequence[float], weight: Sequence[int], qs: Sequence[float]
) -> list[float | None]:
    """Percentiles of a weighted sample (nearest rank); None for an empty sample."""
    total = sum(weight)
    if not total:
        return [None for _ in qs]
    order = sorted(range(len(lat)), key=lat.__getitem__)
    out: list[float | None] = []
    for q in qs:
        rank = q * total
        acc = 0
        value = lat[order[-1]]
        for i in order:
            acc += weight[i]
            if acc >= rank:
                value = lat[i]
                break
        out.append(value)
    return out


# --------------------------------------------------------------------------- worker side


def err_key(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    name = type(exc).__name__
    code = getattr(exc, "errno", None)
    return f"{name}({errno.errorcode.get(code, code)})" if code else name


def merge(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v
