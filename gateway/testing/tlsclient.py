"""TLS device clients for tests and benchmarks: the stdlib ``ssl`` module over trio's
``SSLStream`` (an independent TLS implementation path from the gateway's pyOpenSSL stream),
plus tiny protocol handlers that stand in for the MQTT and HTTP servers.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from gateway.frontdoor.connection import Handlers, ServeFn
from gateway.frontdoor.listeners import FrontDoorConfig, serve_device_listeners
from gateway.model import ConnectionInfo, LogRecord
from gateway.testing.certs import MemoryDirectory, TestPKI
from gateway.tls.contexts import ConnectorTLS, ServerContexts

__all__ = [
    "CONNACK_ACCEPTED",
    "Gateway",
    "Recorder",
    "client_context",
    "mqtt_connect_bytes",
    "open_tls_client",
    "start_gateway",
    "tiny_http_handler",
    "tiny_mqtt_handler",
]

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"  # MQTT 3.1.1 §3.2: CONNACK, session present 0, rc 0


def mqtt_connect_bytes(client_id: str = "dev") -> bytes:
    """A minimal MQTT 3.1.1 CONNECT (clean session, keepalive 60), built by hand."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def client_context(
    ca_path: str,
    *,
    alpn: Sequence[str] | None = None,
    cert_path: str | None = None,
    key_path: str | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_path`` (hostname checked against SNI)."""
    ctx = ssl.create_default_context(cafile=ca_path)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert_path is not None:
        ctx.load_cert_chain(cert_path, key_path)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


async def open_tls_client(
    port: int,
    server_name: str,
    ctx: ssl.SSLContext,
    *,
    host: str = "127.0.0.1",
    local_address: str | None = None,
) -> trio.SSLStream[trio.SocketStream]:
    """Connect (from ``local_address``, e.g. another 127.0.0.x) and complete the
    handshake; raises ``trio.BrokenResourceError`` if refused."""
    tcp = await trio.open_tcp_stream(host, port, local_address=local_address)
    stream = trio.SSLStream(tcp, ctx, server_hostname=server_name)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


class Recorder:
    """Collects what the stand-in handlers saw: ``(route, ConnectionInfo)`` pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ConnectionInfo]] = []

    def routes(self) -> list[str]:
        return [route for route, _ in self.seen]


def tiny_mqtt_handler(recorder: Recorder) -> ServeFn:
    """A handler that reads one CONNECT and answers CONNACK, then echoes until EOF."""

    async def serve_mqtt(stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        recorder.seen.append(("mqtt", info))
        data = b""
        while len(data) < 2 or len(data) < 2 + data[1]:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        if data[0] != 0x10:
            return
        await stream.send_all(CONNACK_ACCEPTED)
        while chunk := await stream.receive_some(4096):
            await stream.send_all(chunk)

    return serve_mqtt


def tiny_http_handler(recorder: Recorder) -> ServeFn:
    """A handler that reads one HTTP/1.1 request head and answers 200 with the route name."""

    async def serve_http(stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        recorder.seen.append(("http", info))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        body = f"http {info.connector_id} {info.alpn}\n".encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )

    return serve_http


class Gateway:
    """What a test needs to poke at the running front door."""

    def __init__(self, pki: TestPKI, directory: MemoryDirectory, contexts: ServerContexts) -> None:
        self.pki = pki
        self.directory = directory
        self.contexts = contexts
        self.recorder = Recorder()
        self.debug: list[LogRecord] = []
        self.ports: dict[str, int] = {}
        self.connector_ca = pki.new_ca("connector-ca")
        self.scope = trio.CancelScope()

    @property
    def ca_path(self) -> str:
        return self.pki.dev.ca_cert

    def reasons(self) -> list[str | None]:
        return [record.reason for record in self.debug]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Poll state that handler tasks append to (plain lists, no event to wait on)."""
        with trio.fail_after(timeout_s):
            while not predicate():  # noqa: ASYNC110 - written by other tasks' list appends
                await trio.sleep(0.01)


async def start_gateway(nursery: trio.Nursery, tmp_path: Path, **config: object) -> Gateway:
    """Start a front door on 127.0.0.1 (ephemeral TLS and MQTT-TLS ports unless overridden
    by ``config``, FrontDoorConfig fields) with two connectors: ``open`` (no client CA) and
    ``strict`` (client CA ``gw.connector_ca``), and the stand-in handlers above.  Cancel
    ``gw.scope`` to stop it."""
    pki = TestPKI(tmp_path)
    directory = MemoryDirectory("localhost")
    directory.put(ConnectorTLS("open", None, None, None, False))
    contexts = ServerContexts(
        directory, server_cert_path=pki.dev.server_cert, server_key_path=pki.dev.server_key
    )
    gw = Gateway(pki, directory, contexts)
    directory.put(ConnectorTLS("strict", gw.connector_ca[0], None, None, False))
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "tls_port": 0,
        "mqtt_tls_port": 0,
        "server_cert_path": pki.dev.server_cert,
        "server_key_path": pki.dev.server_key,
        "shutdown_grace_s": 0.5,
    }
    settings.update(config)
    cfg = FrontDoorConfig(**settings)  # type: ignore[arg-type]
    handlers = Handlers(
        serve_mqtt=tiny_mqtt_handler(gw.recorder), serve_http=tiny_http_handler(gw.recorder)
    )

    async def run(task_status: trio.TaskStatus[dict[str, int]]) -> None:
        with gw.scope:
            await serve_device_listeners(
                cfg,
                directory,
                handlers,
                gw.debug.append,
                contexts=contexts,
                task_status=task_status,
            )

    gw.ports = await nursery.start(run)
    return gw
