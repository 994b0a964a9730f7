"""Every listening socket of a gateway, bound once, before anything else runs.

``gateway serve`` binds the device ports and the management API port here, in the process
that lives as long as the gateway (docs/architecture.md "The node"): the workers serve
duplicates of the device sockets (the kernel hands each connection to whichever worker
accepts first) and the store owner serves the API socket, so a process that dies and is
restarted never closes a port, and a port that cannot be bound is found before any child
starts.  A port in use is one clear line naming the flag to change (:class:`BindError`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from gateway.config import OFF, GatewayConfig
from gateway.model import Transport

__all__ = ["FLAGS", "BindError", "BoundSockets", "bind_sockets"]

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


def _listen(host: str, port: int, backlog: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
                device[transport] = [_listen(config.host, port, backlog, transport.value)]
        api = _listen(config.api_host, config.api_port, 1024, "api")
    except BindError:
        for socks in device.values():
            for s in socks:
                s.close()
        raise
    return BoundSockets(device, api)
