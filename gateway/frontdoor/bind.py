"""Every listening socket of a gateway, bound once, before anything else runs.

``gateway serve`` binds the device ports and the management API port here, in the process
that lives as long as the gateway (docs/architecture.md "The node"): the workers serve
duplicates of the device sockets (the kernel hands each connection to whichever worker
accepts first) and the store owner serves the API socket, so a process that dies and is
restarted never closes a port, and a port that cannot be bound is found before any child
starts.  A port in use is one clear line naming the flag to change (:class:`BindError`).

The device listeners' ``host`` is one address or several separated by commas
(:func:`listen_hosts`): IPv4, IPv6 (``::1``), or ``::`` for every address of both families
where the OS allows dual-stack sockets (``IPV6_V6ONLY`` off; IPv4 clients then show as
IPv4-mapped IPv6 addresses, which the front door records as IPv4,
:func:`gateway.addresses.normalize_ip`).  The same code binds the in-process listeners of
:func:`gateway.frontdoor.listeners.serve_device_listeners`.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Mapping

from gateway.config import OFF, GatewayConfig
from gateway.model import Transport

__all__ = ["FLAGS", "BindError", "BoundSockets", "bind_sockets", "listen_hosts", "split_hosts"]

FLAGS: Mapping[str, str] = {
    Transport.TLS.value: "--tls-port",
    Transport.MQTT_TLS.value: "--mqtt-tls-port",
    Transport.DEV_HTTP.value: "--dev-http-port",
    Transport.DEV_MQTT.value: "--dev-mqtt-port",
    "api": "--api-port",
}


class BindError(Exception):
    """A listening socket could not be bound; the message is the one line to show."""


class BoundSockets:
    """Listening sockets by transport (device ports) plus the management API's."""

    def __init__(self, device: dict[Transport, list[socket.socket]], api: socket.socket) -> None:
        self.device = device
        self.api = api

    @property
    def ports(self) -> dict[str, int]:
        out = {t.value: socks[0].getsockname()[1] for t, socks in self.device.items() if socks}
        out["api"] = self.api.getsockname()[1]
        return out

    def close(self) -> None:
        for socks in self.device.values():
            for s in socks:
                s.close()
        self.api.close()


def split_hosts(hosts: str) -> list[str]:
    """``"127.0.0.1, ::1"`` → ``["127.0.0.1", "::1"]`` (brackets around IPv6 allowed)."""
    out = [h.strip().removeprefix("[").removesuffix("]") for h in hosts.split(",")]
    return [h for h in out if h]


def _listen(host: str, port: int, backlog: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "::" is both families where the OS allows it; a specific IPv6 address is
            # itself (an IPv4-mapped one, ::ffff:a.b.c.d, needs the option off to bind)
            v6only = 0 if host == "::" or host.lower().startswith("::ffff:") else 1
            with contextlib.suppress(OSError):  # some systems force one or the other
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        flag = FLAGS[what]
        if exc.errno == errno.EADDRINUSE:
            raise BindError(
                f"port {port} on {host} is in use ({flag}); stop what uses it or pass "
                f"another {flag}"
            ) from None
        if exc.errno == errno.EACCES:
            raise BindError(
                f"no permission to listen on port {port} ({flag}); pass a port above 1023 "
                f"with {flag} or grant the capability"
            ) from None
        raise BindError(f"cannot listen on {host}:{port} ({flag}): {exc.strerror}") from None
    return sock


def listen_hosts(hosts: str, port: int, backlog: int, what: str) -> list[socket.socket]:
    """One listening socket per address of ``hosts`` (see the module docstring), all on
    ``port``; port 0 takes the first socket's ephemeral port for the others.  Raises
    :class:`BindError`; nothing stays open then."""
    names = split_hosts(hosts)
    if not names:
        raise BindError(f"no address to listen on for {FLAGS[what]} (--host is empty)")
    socks: list[socket.socket] = []
    try:
        for host in names:
            socks.append(_listen(host, port, backlog, what))
            if port == 0:
                port = socks[0].getsockname()[1]
    except BindError:
        for s in socks:
            s.close()
        raise
    return socks


def bind_sockets(config: GatewayConfig, backlog: int = 4096) -> BoundSockets:
    """Bind every configured port (``-1`` off; dev ports only with ``dev``).  Raises
    :class:`BindError`; nothing stays open then."""
    wanted = {
        Transport.TLS: config.tls_port,
        Transport.MQTT_TLS: config.mqtt_tls_port,
        Transport.DEV_HTTP: config.dev_http_port if config.dev else OFF,
        Transport.DEV_MQTT: config.dev_mqtt_port if config.dev else OFF,
    }
    device: dict[Transport, list[socket.socket]] = {}
    try:
        for transport, port in wanted.items():
            if port != OFF:
                device[transport] = listen_hosts(config.host, port, backlog, transport.value)
        api = _listen(config.api_host, config.api_port, 1024, "api")
    except BindError:
        for socks in device.values():
            for s in socks:
                s.close()
        raise
    return BoundSockets(device, api)
