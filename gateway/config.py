"""Gateway configuration: one Struct, loaded once at start and passed down.

Precedence, lowest first: built-in defaults, ``DIR/gateway.toml``, environment variables
``GATEWAY_<FIELD>`` (upper case, e.g. ``GATEWAY_BASE_DOMAIN``), command-line flags.  Port
``0`` asks the OS for a free port (tests, benchmarks); ``-1`` turns a listener off.  The
ports actually bound are written to ``DIR/run.json``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from gateway.addresses import NetworkSet

__all__ = [
    "FD_RESERVE",
    "LISTENERS",
    "GatewayConfig",
    "fd_capacity",
    "load_config",
    "proxy_listeners",
    "resolve_workers",
    "split_list",
]

LISTENERS = ("tls", "mqtt_tls", "dev_http", "dev_mqtt")  # the device listeners' names

OFF = -1
FD_RESERVE = 500  # descriptors a process keeps for itself: store, bus, listeners, logs


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    data: str = "./var"
    base_domain: str = "localhost"
    host: str = "0.0.0.0"  # device listeners: addresses, comma-separated; "::" dual-stack
    tls_port: int = 8443  # HTTP/1.1, h2 and MQTT by ALPN (Murano's 443)
    mqtt_tls_port: int = 8883
    dev: bool = False  # turns on the plain ports below with the demo connector
    dev_http_port: int = 8080
    dev_mqtt_port: int = 1883
    dev_connector: str = "demo"  # the plain MQTT port's connector
    api_host: str = "127.0.0.1"
    api_port: int = 9080
    synchronous: str = "FULL"  # SQLite: FULL survives power loss; NORMAL for benchmarks
    store: str = ""  # "" = SQLite in the data directory; postgresql://… (gateway/store/factory.py)
    handshake_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0  # MQTT: CONNECT must arrive this soon after TLS
    http_fast_path: bool = True  # HTTP/1.1 devices on the llhttp fast path (false: hypercorn)
    http_head_timeout_s: float = 10.0  # a request head must complete this soon (408)
    http_body_timeout_s: float = 30.0  # a request body must make progress this often (408)
    http_keep_alive_s: float = 120.0  # an idle keep-alive connection closes after this
    max_connections: int = 40_000  # the node's design capacity (docs/decisions.md)
    max_handshakes: int = 512  # per process
    max_handshakes_per_ip: int = 64  # of those, one address or IPv6 /64 (0: no limit)
    workers: int = 0  # device-serving processes; 0 = auto (resolve_workers)
    event_retention_count: int = 1_000_000
    event_retention_days: float = 30.0
    password_cache_entries: int = 65_536  # verified-password proofs per process; 0 = off
    demo_connector: bool = True  # create the demo connector on first start
    log_level: str = "INFO"
    # PROXY protocol (docs/decisions.md "Addresses and the PROXY protocol"): the device
    # listeners that read a header first (tls, mqtt_tls, dev_http, dev_mqtt, or all), the
    # proxies allowed to send one (addresses or CIDRs), and whether they must
    proxy_protocol: str = ""
    proxy_trusted: str = ""
    proxy_required: bool = True
    bus: str = ""  # "": the node's own bus; nats://host:port: a node of a cluster
    node_name: str = ""  # unique in a cluster; "": the host name and the data directory
    node_lost_after_s: float = 15.0  # a cluster node silent this long is declared lost

    @property
    def clustered(self) -> bool:
        return bool(self.bus)

    @property
    def node(self) -> str:
        """This node's name in a cluster (a NATS subject token: letters, digits, - and _)."""
        if self.node_name:
            return self.node_name
        import hashlib
        import re
        import socket

        host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
        digest = hashlib.sha256(os.path.abspath(self.data).encode()).hexdigest()[:6]
        return f"{host}-{digest}"

    @property
    def data_dir(self) -> Path:
        return Path(self.data)


def split_list(text: str) -> list[str]:
    """A comma-separated setting as its items (blanks dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def proxy_listeners(config: GatewayConfig) -> list[str]:
    """The listeners of ``proxy_protocol`` (``all`` expanded), checked with the trusted
    proxies: raises ``ValueError`` with one line fit for the operator."""
    names = split_list(config.proxy_protocol)
    if names == ["all"]:
        names = list(LISTENERS)
    unknown = [n for n in names if n not in LISTENERS]
    if unknown:
        raise ValueError(
            f"proxy_protocol: {', '.join(unknown)} is no listener "
            f"(use {', '.join(LISTENERS)} or all)"
        )
    trusted = split_list(config.proxy_trusted)
    try:
        NetworkSet(trusted)
    except ValueError as exc:
        raise ValueError(f"proxy_trusted: {exc}") from None
    if names and not trusted:
        raise ValueError(
            "proxy_protocol needs proxy_trusted: the addresses or networks of the proxies "
            "allowed to send a PROXY header"
        )
    return names


def fd_capacity() -> int:
    """Connections one process can hold: its open-file limit less :data:`FD_RESERVE`."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(64, soft - FD_RESERVE)


def resolve_workers(config: GatewayConfig, cpus: int | None = None) -> int:
    """``workers``, or for 0 (auto): one per CPU, and at least as many as it takes to
    hold ``max_connections`` under the open-file limit (docs/decisions.md)."""
    if config.workers > 0:
        return config.workers
    cpus = cpus or os.cpu_count() or 1
    return max(cpus, -(-config.max_connections // fd_capacity()))


def _coerce(field: str, raw: str) -> Any:
    default = getattr(GatewayConfig(), field)
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"GATEWAY_{field.upper()}: expected a boolean, got {raw!r}")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def load_config(
    overrides: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None
) -> GatewayConfig:
    """Build the configuration; ``overrides`` are the flags the user actually gave."""
    env = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    fields = set(GatewayConfig.__struct_fields__)
    values: dict[str, Any] = {}
    data = overrides.get("data") or env.get("GATEWAY_DATA") or "./var"
    toml_path = Path(data) / "gateway.toml"
    if toml_path.exists():
        with toml_path.open("rb") as fh:
            doc = tomllib.load(fh)
        unknown = set(doc) - fields
        if unknown:
            raise ValueError(f"{toml_path}: unknown settings {', '.join(sorted(unknown))}")
        values.update(doc)
    for name in fields:
        raw = env.get(f"GATEWAY_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(name, raw)
    values.update(overrides)
    values["data"] = str(data)
    try:
        config = msgspec.convert(values, GatewayConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid configuration: {exc}") from exc
    if config.store and not config.store.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"store must be empty (SQLite in the data directory) or a postgresql:// URL, "
            f"not {config.store!r}"
        )
    if not config.node_lost_after_s >= 1.0:
        raise ValueError(
            f"node_lost_after_s must be at least 1 second, not {config.node_lost_after_s}"
        )
    try:
        proxy_listeners(config)
    except ValueError as exc:
        raise ValueError(f"invalid configuration: {exc}") from None
    return config
