"""One device connection: admission, TLS handshake under a deadline, identity, protocol switch.

The listener hands every accepted TCP stream to :meth:`FrontDoor.run_connection`, which

1. waits for a handshake slot (``max_handshakes_in_flight``) — the admission control that
   keeps a reconnect storm from putting thousands of RSA/ECDSA operations and callbacks in
   front of the one device whose handshake could finish now; the wait counts against the
   handshake deadline, so a client queued too long is dropped like a slow one;
2. runs the handshake on a :class:`~gateway.tls.stream.TLSStream`; SNI selected the
   connector inside it (:mod:`gateway.tls.contexts`);
3. turns the client certificate (if any) into a :class:`~gateway.model.CertClaim`;
4. picks the protocol: the MQTT-only port always speaks MQTT; on the multi-protocol port
   ALPN decides, and without ALPN the first byte does (:mod:`gateway.frontdoor.sniff`);
5. calls the injected handler with the stream and a :class:`~gateway.model.ConnectionInfo`,
   and closes the stream when the handler returns.

Before all of this, :class:`~gateway.frontdoor.peer.PeerResolver` decides the connection's
address (:class:`~gateway.model.PeerAddress`: the socket's, or a trusted proxy's PROXY
header's) — the one place it is decided; every later step and the handler read
``ConnectionInfo.peer``.

Every refusal before a handler runs writes one debug ``LogRecord`` keyed by peer IP, with a
reason from docs/protocol.md §12 item 24 (``no_sni``, ``unknown_connector``, ``idle_timeout``,
``ssl_closed``, ``expired``, ``untrusted_certificate``, ``bad_certificate``; before TLS on a
PROXY protocol listener ``proxy_untrusted``, ``proxy_missing``, ``bad_proxy_header``).

Metrics (``/metrics``, :class:`gateway.metrics.Metrics`): handshakes by outcome (``ok``,
``failed``, ``timeout``), refusals by reason (``protocol="tls"``; ``"proxy"`` for those
decided before TLS by the PROXY protocol), and the open-connection
gauge by protocol and connector while a handler runs.

Draining: when the gateway shuts down, :meth:`FrontDoor.start_draining` makes every pending
and future ``receive_some`` of a handler return EOF.  A session then finishes what it has in
flight (acknowledgements waiting for their commit) and returns on its own; the listener
cancels whatever is left after the grace period.
"""

from __future__ import annotations

import datetime as _dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import msgspec
import trio

from gateway.clock import now_us
from gateway.errors import Refused
from gateway.frontdoor.peer import PeerGone, PeerRefusal, PeerResolver, ProxyPolicy
from gateway.frontdoor.sniff import ReplayStream, Route, classify_first_byte
from gateway.metrics import Metrics
from gateway.model import CertClaim, ConnectionInfo, LogRecord, PeerAddress, Transport
from gateway.tls.contexts import ALPN_H2, ALPN_HTTP11, ALPN_MQTT, HandshakeState, ServerContexts
from gateway.tls.identity import claim_certificate
from gateway.tls.stream import MAX_RECV, TLSStream

__all__ = ["DebugLog", "DrainTarget", "DrainingStream", "FrontDoor", "Handlers", "ServeFn"]

logger = logging.getLogger(__name__)

ServeFn = Callable[[trio.abc.Stream, ConnectionInfo], Awaitable[None]]
DebugLog = Callable[[LogRecord], None]

CLOSE_TIMEOUT_S = 2.0  # how long a close_notify may wait for a slow peer before we drop it
REFUSED_EVENT = "connection_refused"

_HTTP_ALPNS = frozenset({ALPN_H2.decode(), ALPN_HTTP11.decode()})


class Handlers(msgspec.Struct, frozen=True):
    """The protocol servers the front door hands connections to (injected)."""

    serve_mqtt: ServeFn
    serve_http: ServeFn


class _Refusal(Exception):
    """Internal: stop this connection before any handler, with a debug-log reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class DrainTarget(Protocol):
    """A handler that ends its own reads when told (see :meth:`DrainingStream.add_drain_target`)."""

    def drain(self) -> None: ...


class DrainingStream(trio.abc.Stream):
    """What handlers see: the connection stream, whose reads end (EOF) once draining begins.

    :meth:`receive_some` guards each read with its own cancel scope (about 1 KB while a read
    waits).  A handler that already holds a cancel scope around its reads — the MQTT
    reader — registers itself with :meth:`add_drain_target` and reads ``.stream``
    directly: draining then calls its ``drain()`` (at once if draining has begun), which
    must end the pending read as at EOF and make the handler treat later reads as EOF.
    """

    __slots__ = ("_door", "stream")

    def __init__(self, stream: trio.abc.Stream, door: FrontDoor) -> None:
        self.stream = stream
        self._door = door

    def add_drain_target(self, target: DrainTarget) -> None:
        """Call ``target.drain()`` when the gateway starts draining, or now if it has
        (remove it when done)."""
        if self._door.draining:
            target.drain()
        self._door._drain_targets.add(target)

    def remove_drain_target(self, target: DrainTarget) -> None:
        self._door._drain_targets.discard(target)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._door.draining:
            await trio.lowlevel.checkpoint()
            return b""
        with trio.CancelScope() as scope:
            self._door._drain_scopes.add(scope)
            try:
                return await self.stream.receive_some(max_bytes)
            finally:
                self._door._drain_scopes.discard(scope)
        return b""  # cancelled by start_draining()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


class FrontDoor:
    """Shared state of a gateway's device listeners: contexts, handlers, limits, log sink.

    ``debug_log`` must not block (it is called from connection tasks).  ``clock`` returns
    wall time in µs for log timestamps (injectable for tests).  ``proxy`` names the
    listeners that read a PROXY protocol header and their policy (:mod:`gateway.frontdoor.peer`;
    ``ValueError`` for a trusted entry that does not parse); the header must arrive within
    ``handshake_timeout_s``.
    """

    def __init__(
        self,
        *,
        contexts: ServerContexts,
        handlers: Handlers,
        debug_log: DebugLog,
        handshake_timeout_s: float = 10.0,
        max_handshakes_in_flight: int = 512,
        dev_default_connector: str | None = None,
        clock: Callable[[], int] = now_us,
        metrics: Metrics | None = None,
        connection_prefix: str = "",
        proxy: Mapping[Transport, ProxyPolicy] | None = None,
    ) -> None:
        self.contexts = contexts
        self.peers = PeerResolver(proxy or {}, timeout_s=handshake_timeout_s)
        # a node's worker prefixes its connection ids, so the store owner can take its
        # devices offline if it dies (docs/architecture.md "The node")
        self.connection_prefix = connection_prefix
        self.metrics = metrics if metrics is not None else Metrics()
        self.handlers = handlers
        self.debug_log = debug_log
        self.handshake_timeout_s = handshake_timeout_s
        self.handshake_slots = trio.CapacityLimiter(max_handshakes_in_flight)
        self.dev_default_connector = dev_default_connector
        self._clock = clock
        self.draining = False
        self._drain_scopes: set[trio.CancelScope] = set()
        self._drain_targets: set[DrainTarget] = set()
        self.active = 0  # connections whose task is running (any stage)

    def start_draining(self) -> None:
        """Make every handler's pending and future reads return EOF (graceful shutdown)."""
        self.draining = True
        for scope in list(self._drain_scopes):
            scope.cancel()
        for target in list(self._drain_targets):
            target.drain()

    # -- the connection task ----------------------------------------------------------------

    async def run_connection(self, stream: trio.abc.Stream, transport: Transport) -> None:
        """Serve one accepted connection to its end.  Never raises for peer misbehaviour;
        handler bugs are logged (one connection must not take the listener down)."""
        self.active += 1
        connection_id = self.connection_prefix + uuid.uuid4().hex
        try:
            try:
                resolved = await self.peers.resolve(stream, transport)
            except PeerRefusal as refusal:
                self._refused(
                    "proxy", _Refusal(refusal.reason, refusal.detail), refusal.peer, connection_id
                )
                await trio.aclose_forcefully(stream)
                return
            except PeerGone:
                await trio.aclose_forcefully(stream)
                return
            peer = resolved.peer
            if transport is Transport.DEV_HTTP or transport is Transport.DEV_MQTT:
                is_http = transport is Transport.DEV_HTTP
                info = ConnectionInfo(
                    connection_id=connection_id,
                    connector_id=None if is_http else self.dev_default_connector,
                    peer=peer,
                    transport=transport,
                )
                handler = self.handlers.serve_http if is_http else self.handlers.serve_mqtt
                if resolved.initial:
                    stream = ReplayStream(stream, resolved.initial)
                await self._serve(handler, stream, info)
            else:
                await self._serve_tls(stream, transport, connection_id, peer, resolved.initial)
        finally:
            self.active -= 1

    async def _serve_tls(
        self,
        tcp: trio.abc.Stream,
        transport: Transport,
        connection_id: str,
        peer: PeerAddress,
        initial: bytes,
    ) -> None:
        conn = self.contexts.new_connection(transport)
        state: HandshakeState = conn.get_app_data()
        tls = TLSStream(tcp, conn, initial=initial)
        try:
            stream, route, claim = await self._open(tls, state, transport)
        except _Refusal as refusal:
            self._refused("tls", refusal, peer, connection_id, state)
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await tls.aclose()  # sends the pending fatal alert, if any
            return
        assert state.connector is not None  # a handshake only completes after SNI matched
        info = ConnectionInfo(
            connection_id=connection_id,
            connector_id=state.connector.connector_id,
            peer=peer,
            transport=transport,
            alpn=tls.alpn,
            server_name=state.server_name,
            cert=claim,
        )
        handler = self.handlers.serve_mqtt if route is Route.MQTT else self.handlers.serve_http
        await self._serve(handler, stream, info)

    async def _open(
        self, tls: TLSStream, state: HandshakeState, transport: Transport
    ) -> tuple[trio.abc.Stream, Route, CertClaim | None]:
        """Handshake, certificate claim and protocol choice; raises _Refusal."""
        deadline = trio.current_time() + self.handshake_timeout_s
        with trio.move_on_at(deadline):
            async with self.handshake_slots:
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError as exc:
                    self.metrics.handshake("failed")
                    cause = exc.__cause__ or exc
                    raise _Refusal(
                        state.reason or "ssl_closed", str(cause) or "handshake failed"
                    ) from exc
        if not tls.handshake_done:
            self.metrics.handshake("timeout")
            raise _Refusal("idle_timeout", f"no TLS handshake within {self.handshake_timeout_s} s")
        self.metrics.handshake("ok")
        claim = self._claim(tls, state)
        alpn = tls.alpn
        if transport is Transport.MQTT_TLS or alpn == ALPN_MQTT.decode():
            return tls, Route.MQTT, claim
        if alpn in _HTTP_ALPNS:
            return tls, Route.HTTP, claim
        # no ALPN: the first byte decides (docs/protocol.md §12 item 7)
        data = b""
        with trio.move_on_after(self.handshake_timeout_s):
            try:
                data = bytes(await tls.receive_some(MAX_RECV))
            except trio.BrokenResourceError as exc:
                raise _Refusal("ssl_closed", str(exc.__cause__ or exc)) from exc
            if not data:
                raise _Refusal("ssl_closed", "closed before sending a byte")
        if not data:
            raise _Refusal(
                "idle_timeout", f"no data within {self.handshake_timeout_s} s of the handshake"
            )
        route = classify_first_byte(data[0])
        if route is None:
            raise _Refusal("bad_protocol", f"first byte 0x{data[0]:02x} is neither MQTT nor HTTP")
        return ReplayStream(tls, data), route, claim

    def _claim(self, tls: TLSStream, state: HandshakeState) -> CertClaim | None:
        leaf = tls.peer_certificate()
        if leaf is None or state.connector is None:
            return None
        try:
            return claim_certificate(
                leaf,
                tls.peer_chain(),
                client_ca_pem=state.connector.client_ca_pem,
                now=_dt.datetime.now(_dt.UTC),
            )
        except Refused as exc:
            raise _Refusal(exc.reason, exc.message) from exc

    async def _serve(self, handler: ServeFn, stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        wrapped = DrainingStream(stream, self)
        protocol = "mqtt" if handler is self.handlers.serve_mqtt else "http"
        gauge = self.metrics.connection_opened(protocol, info.connector_id)
        try:
            await handler(wrapped, info)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("connection %s ended by the transport: %r", info.connection_id, exc)
        except Exception:
            # A handler bug must cost one connection, not every device on the listener.
            logger.exception(
                "handler failed on connection %s from %s", info.connection_id, info.peer_ip
            )
        finally:
            self.metrics.connection_closed(gauge)
            # a peer that stops reading must not hold the task in close_notify forever;
            # cancellation inside aclose() closes the socket without the alert
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await stream.aclose()

    def _refused(
        self,
        layer: str,
        refusal: _Refusal,
        peer: PeerAddress,
        connection_id: str,
        state: HandshakeState | None = None,
    ) -> None:
        """One debug record and one ``refused`` count (``layer``: ``tls`` or ``proxy``)."""
        logger.debug(
            "refused %s from %s: %s (%s)", connection_id, peer.ip, refusal.reason, refusal.detail
        )
        self.metrics.refuse(layer, refusal.reason)
        connector = state.connector if state is not None else None
        server_name = state.server_name if state is not None else None
        record = LogRecord(
            kind="debug",
            timestamp=self._clock(),
            connector_id=connector.connector_id if connector else None,
            ip=peer.ip,
            connection_id=connection_id,
            event=REFUSED_EVENT,
            reason=refusal.reason,
            detail=refusal.detail
            if server_name is None
            else f"{refusal.detail} (SNI {server_name})",
            proxy=peer.proxy,
        )
        try:
            self.debug_log(record)
        except Exception:
            logger.exception("debug log sink failed")
