"""The MQTT device API over a stream: the only place MQTT bytes meet the network and the store.

:func:`make_mqtt_server` returns the handler the front door calls for every MQTT connection
(TLS on the multi-protocol and MQTT ports, plain on the dev port).  One connection is one
:class:`_Connection`, a task that reads and, once needed, two helper tasks in its nursery:

* the **reader** receives bytes under the session's deadline (``idle_timeout``), feeds the
  sans-IO :class:`~gateway.mqtt.session.Session`, authenticates the CONNECT, dispatches every
  PUBLISH of one read with the compiled :func:`gateway.rules.dispatch.dispatch`, which appends
  the store rows of all of them to one list, and submits that read as **one** submission
  (one ``DataIn`` with every resource write of the read, plus an ``AppendEvent`` per custom
  publish) with one ticket;
* the **acker** awaits those submissions' tickets in order and only then queues their
  PUBACKs — an acknowledgement means committed (docs/architecture.md principle 2) — all PUBACKs of a
  read in one buffer;
* the **sender**, started by the first push of a set value, writes whatever the session has
  queued in one ``send_all`` per wake-up from then on.

Who writes, and when, is the output state machine of :mod:`gateway.device.mqtt.output`: the
reader writes its own replies (CONNACK, SUBACK, PINGRESP) after each read and the acker its
PUBACKs, until a push needs the sender.  The helpers are started lazily, because most
connections of a fleet sit idle: an idle connection costs one task, one cancel scope (the
reader's, whose deadline follows the session's) and no channel or events
(bench/profiles.md has the figures).

A client may pipeline packets behind its CONNECT (docs/decisions.md, "MQTT before CONNACK"):
the session holds them until the CONNECT is decided, and the reader then handles them in the
same read, after the CONNACK.

Memory is bounded per connection: the ack queue holds at most ``MAX_INFLIGHT_READS``
uncommitted reads (the reader blocks when it is full: TCP backpressure reaches the client),
the reader also stops while more than ``MAX_BUFFERED_OUT`` bytes wait to be sent, and a
client that lets more than ``MAX_PUSH_BUFFER`` bytes of pushes pile up is dropped
(``slow_consumer``; pending values stay pending in the store and are re-sent on reconnect).

Resource handling: the handler never closes the stream (the front door does, after it
returns).  Errors: a :class:`~gateway.errors.ProtocolViolation` ends only its own connection,
with one debug-log entry; refusals answer the CONNECT with their CONNACK code.  A read
whose writes did not commit gets no PUBACK, and its connection ends (reason ``disk_full``
when the disk is full, else ``internal_error``) so that the client sends its
unacknowledged QoS 1 messages again on its next connection (MQTT 3.1.1 §4.4).  Whatever
ends a connection, :meth:`_Connection.finish` detaches it from the control hub, records the
``disconnect`` (when it was authenticated) and logs the reason.

Metrics (``services.metrics``): packets in and out are added once per read and once per
``send_all`` (the session counts them), resource writes once their commit is awaited, and
refused CONNECTs and provisioning requests by reason — a few dict increments per read, with
label keys computed once per connection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import trio

from gateway.clock import now_us
from gateway.device.mqtt.output import Output
from gateway.errors import (
    BadRequest,
    ConnAckCode,
    GatewayError,
    NotFound,
    Refused,
    StorageFull,
    debug_reason,
)
from gateway.frontdoor.connection import DrainingStream
from gateway.metrics import Labels, packet_key, write_key
from gateway.model import ConnectionInfo, LogRecord, PointWrite, Protocol
from gateway.mqtt.codec import DEFAULT_MAX_PACKET_SIZE
from gateway.mqtt.packets import Connect, Publish, Subscribe
from gateway.mqtt.session import Closed, Event, Session, SessionState
from gateway.rules.dispatch import (
    CustomPublish,
    ProvisionRequest,
    Rejection,
    ResourceTable,
    dispatch,
)
from gateway.services.bundle import Services
from gateway.services.connectors import Connector
from gateway.services.control import Push
from gateway.services.devices import DeviceAuth, not_authenticated
from gateway.store.api import AppendEvent, DataIn, EventMeta, Op, Ticket

__all__ = [
    "DRAIN_TIMEOUT_S",
    "MAX_BUFFERED_OUT",
    "MAX_INFLIGHT_READS",
    "MAX_PUSH_BUFFER",
    "MAX_RECV",
    "make_mqtt_server",
]

log = logging.getLogger(__name__)

MAX_RECV = 64 * 1024  # bytes per receive_some: one read = one store submission at most
MAX_INFLIGHT_READS = 16  # reads whose writes await their commit, per connection
MAX_BUFFERED_OUT = 256 * 1024  # stop reading while this much output waits to be sent
MAX_PUSH_BUFFER = 4 * 1024 * 1024  # a client that does not read its pushes is dropped here
DRAIN_TIMEOUT_S = 5.0  # after the end: how long in-flight PUBACKs may take to go out

_PROTOCOL = Protocol.MQTT.value
_METRICS_PROTOCOL = "mqtt"  # the metrics label (events carry Protocol.MQTT's value)
_PACKETS_IN = packet_key(_METRICS_PROTOCOL, "in")
_PACKETS_OUT = packet_key(_METRICS_PROTOCOL, "out")
_CERTIFICATE = "certificate"
_PASSWORD = "password"
_WRITE_KEYS: dict[str | None, Labels] = {}  # per connector: shared by its connections


def _write_key(cid: str | None) -> Labels:
    key = _WRITE_KEYS.get(cid)
    if key is None:
        key = _WRITE_KEYS[cid] = write_key(_METRICS_PROTOCOL, cid)
    return key


def make_mqtt_server(
    services: Services,
) -> Callable[[trio.abc.Stream, ConnectionInfo], Awaitable[None]]:
    """The front door's MQTT handler bound to ``services`` (see the module docstring)."""

    def serve_mqtt(stream: trio.abc.Stream, info: ConnectionInfo) -> Awaitable[None]:
        # a plain function returning the coroutine: one frame less per idle connection
        return _Connection(services, stream, info).run()

    return serve_mqtt


class _Pending:
    """One entry of the ack queue: PUBACK ``packet_ids`` once ``ticket`` has committed;
    ``writes`` resource values are then counted as written."""

    __slots__ = ("packet_ids", "ticket", "writes")

    def __init__(self, ticket: Ticket | None, packet_ids: list[int], writes: int) -> None:
        self.ticket = ticket
        self.packet_ids = packet_ids
        self.writes = writes


class _Batch:
    """What one read asks of the store, gathered in order: the resource rows of all its
    PUBLISHes (one ``DataIn``, placed where its first row arrived), the other operations,
    and the QoS 1 packet ids to acknowledge once all of it has committed."""

    __slots__ = ("data_at", "ops", "packet_ids", "points")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.points: list[PointWrite] = []
        self.data_at = -1  # index in ops of the DataIn; -1: no row yet
        self.packet_ids: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.points or self.ops or self.packet_ids)


class _Connection:
    """One MQTT connection; it is also the control hub's :class:`PushTarget` for its device.

    Slotted, and its channel and events exist only once used: tens of thousands of these
    live at once on a busy gateway."""

    __slots__ = (
        "_ack_send",
        "_acker_done",
        "_acks_idle",
        "_counted_in",
        "_counted_out",
        "_draining",
        "_handling",
        "_metrics",
        "_nursery",
        "_queued",
        "_reader_scope",
        "_reading",
        "_stopped",
        "_table",
        "_table_version",
        "_writes_key",
        "attached",
        "auth",
        "cid",
        "client_id",
        "info",
        "meta",
        "output",
        "services",
        "session",
        "stream",
    )

    def __init__(self, services: Services, stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        self.services = services
        self.stream = stream
        self.info = info
        self.cid = info.connector_id
        connector = services.registry.get(self.cid) if self.cid else None
        max_packet = (
            connector.settings.limits.max_packet_size if connector else DEFAULT_MAX_PACKET_SIZE
        )
        self.session = Session(
            now=trio.current_time(),
            max_packet_size=max_packet,
            connect_timeout_s=services.config.connect_timeout_s,
        )
        self.output = Output(
            stream, self.session, on_write=self._count_out, on_failed=self._send_failed
        )
        self.meta = EventMeta(connection_id=info.connection_id, ip=info.peer_ip, protocol=_PROTOCOL)
        self.auth: DeviceAuth | None = None
        self.attached = False
        self.client_id = ""
        self._table: ResourceTable | None = None
        self._table_version = -1
        self._nursery: trio.Nursery | None = None
        # the acker's channel: created with the acker, by the first submission
        self._ack_send: trio.MemorySendChannel[_Pending] | None = None
        self._acker_done: trio.Event | None = None  # set when the acker has ended
        self._queued = 0  # ack-queue entries not yet processed by the acker
        self._acks_idle: trio.Event | None = None  # None: nobody waits for the acker
        self._reader_scope = trio.CancelScope()
        self._reading = False  # the reader is blocked in receive_some (safe to cancel)
        self._handling = False  # the reader is handling a read (it flushes the output after)
        self._stopped = False  # ended from outside the bytes: ignore the rest of the read
        self._draining = False  # the gateway shuts down: reads end as at EOF
        self._metrics = services.metrics
        self._writes_key = _write_key(self.cid)
        self._counted_in = 0  # session.packets_in already added to the metrics
        self._counted_out = 0  # session.packets_out already added to the metrics

    # -- the connection task -------------------------------------------------------------

    async def run(self) -> None:
        stream = self.stream
        draining = stream if isinstance(stream, DrainingStream) else None
        if draining is not None:
            draining.add_drain_target(self)  # sets _draining now if already draining
        output = self.output
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                output.open(nursery)
                try:
                    await self._read_loop(draining)
                finally:
                    if self._ack_send is not None:
                        self._ack_send.close()  # the acker drains what is queued, then ends
                with trio.move_on_after(DRAIN_TIMEOUT_S):
                    if self._acker_done is not None:
                        await self._acker_done.wait()  # in-flight PUBACKs
                    output.finish()  # no producer task is left
                    await output.wait_done()  # the rest (a refusing CONNACK, pushes)
                nursery.cancel_scope.cancel()
        finally:
            if draining is not None:
                draining.remove_drain_target(self)
            self.finish()

    async def _read_loop(self, draining: DrainingStream | None) -> None:
        """Read, handle, reply until the session closes.  One cancel scope serves the whole
        loop: its deadline is the session's while waiting for bytes and infinite while a
        read is being handled (a read is never abandoned half-submitted)."""
        session = self.session
        output = self.output
        # a registered drain target reads the wrapped stream directly (no guard frame or
        # scope per read); drain() interrupts the read, and `draining` is checked before each
        receive = self.stream.receive_some if draining is None else draining.stream.receive_some
        scope = self._reader_scope
        data: bytes | bytearray = b""
        with scope:
            while session.state is not SessionState.CLOSED:
                scope.deadline = session.deadline
                while session.bytes_to_send > MAX_BUFFERED_OUT and not output.broken:
                    await output.wait_progress()
                self._reading = True
                try:
                    data = b"" if self._draining else await receive(MAX_RECV)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                finally:
                    self._reading = False
                if scope.cancel_called:
                    break  # the deadline passed (or a close) as the bytes came: see below
                scope.deadline = math.inf
                if type(data) is not bytes:
                    data = bytes(data)
                session.receive_data(data, trio.current_time())
                events = session.events()
                grown = session.packets_in - self._counted_in
                if grown:
                    self._counted_in = session.packets_in
                    self._metrics.packets[_PACKETS_IN] += grown
                self._handling = True
                try:
                    await self._handle(events)
                finally:
                    self._handling = False
                await output.flush()
        if scope.cancel_called and session.state is not SessionState.CLOSED:
            if self._draining:
                session.receive_data(b"", trio.current_time())  # drained: as at EOF
            elif not self._stopped:
                limit = session.deadline - trio.current_time()
                self.close("idle_timeout", f"no packet before the deadline ({limit:+.1f} s)")

    def drain(self) -> None:
        """The gateway shuts down: end the read as at EOF (in-flight acks still drain)."""
        self._draining = True
        if self._reading:
            self._reader_scope.cancel()

    def _count_out(self) -> None:
        session = self.session
        grown = session.packets_out - self._counted_out
        self._counted_out = session.packets_out
        self._metrics.packets[_PACKETS_OUT] += grown

    def _send_failed(self, exc: Exception) -> None:
        self.close("ssl_closed" if self.info.tls else "peer_closed", f"send failed: {exc!r}")

    def _start_acker(self) -> trio.MemorySendChannel[_Pending]:
        """Start the acker once (it writes its PUBACKs itself, see the output module)."""
        if self._ack_send is None:
            assert self._nursery is not None
            self._ack_send, receive = trio.open_memory_channel[_Pending](MAX_INFLIGHT_READS)
            self._acker_done = trio.Event()
            self._nursery.start_soon(self._ack_loop, receive)
        return self._ack_send

    async def _handle(self, events: list[Event]) -> None:
        """Act on one read's events in order; all writes of the read form one submission.
        The packets a client pipelined behind its CONNECT come after the decision on it
        (the session held them), and join the same list."""
        batch = _Batch()
        now = now_us()
        debug = log.isEnabledFor(logging.DEBUG)
        i = 0
        while i < len(events):
            event = events[i]
            i += 1
            if self._stopped:
                break
            t = type(event)
            if t is Publish:
                assert isinstance(event, Publish)
                if debug:
                    log.debug(
                        "%s PUBLISH (d%d, q%d, r%d, m%d, %r, ... (%d bytes))",
                        self.info.connection_id,
                        event.dup,
                        event.qos,
                        event.retain,
                        event.packet_id,
                        event.topic,
                        len(event.payload),
                    )
                if self.auth is None:
                    await self._submit(batch, now)
                    batch = _Batch()
                    await self._unbound_publish(event, now)
                    continue
                request = self._dispatch(event, now, batch)
                if request is not None:  # $provision/ on an authenticated connection
                    await self._submit(batch, now)
                    batch = _Batch()
                    await self._provision_publish(event, request)
                elif event.qos:
                    batch.packet_ids.append(event.packet_id)
            elif t is Connect:
                assert isinstance(event, Connect)
                await self._on_connect(event)
                events += self.session.events()  # what was held behind it, if accepted
            elif t is Subscribe:
                assert isinstance(event, Subscribe)
                if self.auth is not None:
                    self.push(await self.services.state.pending(self.auth.device_id))
        await self._submit(batch, now)

    async def _submit(self, batch: _Batch, now: int) -> None:
        """One submission and one ticket for the batch (nothing when it is empty); its
        PUBACKs are queued by the acker after the commit."""
        if not batch:
            return
        ops = self._ops(batch, now)
        ticket = self.services.store.submit(ops) if ops else None
        send = self._start_acker()
        self._queued += 1
        await send.send(_Pending(ticket, batch.packet_ids, len(batch.points)))

    def _ops(self, batch: _Batch, now: int) -> list[Op]:
        """The batch's store operations, its ``DataIn`` (when it has rows) in place."""
        ops = batch.ops
        if batch.points:
            auth = self.auth
            assert auth is not None
            assert self.cid is not None
            data = DataIn(self.cid, auth.device_id, auth.identity, batch.points, self.meta, now)
            ops.insert(batch.data_at, data)
        return ops

    # -- CONNECT ---------------------------------------------------------------------------

    async def _on_connect(self, packet: Connect) -> None:
        self.client_id = packet.client_id
        connector = self.services.registry.get(self.cid) if self.cid else None
        if connector is None:
            self._refuse(
                ConnAckCode.NOT_AUTHORIZED,
                "unknown_connector",
                f"no connector {self.cid!r} on this listener",
            )
            return
        devices = self.services.devices
        try:
            if self.info.cert is not None:
                auth = await devices.authenticate_certificate(
                    connector.id, self.info.cert, ip=self.info.peer_ip, meta=self.meta
                )
            elif packet.password is not None:
                auth = await self._authenticate_secret(connector.id, packet)
            else:
                _check_anonymous(connector)
                self.session.accept()
                self._debug(
                    "connect",
                    None,
                    f"anonymous (provisioning only), client id {packet.client_id!r}",
                )
                return
        except Refused as exc:
            self._refuse(exc.connack, exc.reason, exc.message)
            return
        except NotFound as exc:  # the connector was deleted meanwhile
            self._refuse(ConnAckCode.NOT_AUTHORIZED, "unknown_connector", exc.message)
            return
        self.session.accept()
        await self._bind(auth)

    async def _authenticate_secret(self, cid: str, packet: Connect) -> DeviceAuth:
        """Token (any user name) first — a cheap indexed lookup — then, with a user name,
        the password of that identity (docs/protocol.md §3.1)."""
        assert packet.password is not None
        try:
            secret = packet.password.decode("utf-8")
        except UnicodeDecodeError:
            raise not_authenticated("the password is not UTF-8") from None
        devices = self.services.devices
        try:
            return await devices.authenticate_token(cid, secret)
        except Refused as exc:
            if exc.reason != "not_authenticated" or not packet.username:
                raise
        return await devices.authenticate_password(cid, packet.username, secret)

    def _refuse(self, code: ConnAckCode, reason: str, detail: str) -> None:
        self._metrics.refuse(_METRICS_PROTOCOL, reason)
        self.session.refuse(code, reason, detail)
        self._debug("connect_refused", reason, f"CONNACK {int(code)}: {detail}")

    async def _bind(self, auth: DeviceAuth) -> None:
        """The connection now speaks for ``auth``'s device: attach for pushes (replacing an
        older connection), record the connect, and push what is pending (§12 items 9, 13)."""
        self.auth = auth
        self.services.control.attach(
            (auth.connector_id, auth.identity), self.info.connection_id, self
        )
        self.attached = True
        self.services.devices.connected(auth, self.meta)
        self._debug("connect", None, f"client id {self.client_id!r}")
        self.push(await self.services.state.pending(auth.device_id))

    # -- PUBLISH ---------------------------------------------------------------------------

    def _table_of(self) -> ResourceTable:
        """The connector's compiled table (cached by the registry until its resources
        change), re-fetched whenever the registry version moves.  Raises NotFound once the
        connector is deleted."""
        registry = self.services.registry
        table = self._table
        if table is None or registry.version != self._table_version:
            assert self.cid is not None
            table = self._table = registry.table(self.cid)
            self._table_version = registry.version
        return table

    def _dispatch(self, packet: Publish, now: int, batch: _Batch) -> ProvisionRequest | None:
        """Add what one authenticated PUBLISH asks of the store to ``batch``: its resource
        rows to the read's one list, a custom publish as an event.  Values that fail their
        resource are logged and dropped, still acknowledged (docs/protocol.md §12 item 13).
        A ``$provision/`` topic is returned for the caller to act on."""
        auth = self.auth
        assert auth is not None
        assert self.cid is not None
        points = batch.points
        had = len(points)
        rejected: list[Rejection] = []
        try:
            result = dispatch(self._table_of(), packet.topic, packet.payload, now, points, rejected)
        except NotFound as exc:
            self.close("unknown_connector", exc.message)
            return None
        except BadRequest as exc:
            self._debug("write_rejected", "bad_request", f"{packet.topic}: {exc.message}")
            return None
        if result is None:
            if had == 0 and points:
                batch.data_at = len(batch.ops)
            for rej in rejected:
                self._debug(
                    "write_rejected",
                    "format_mismatch",
                    f"{rej.alias}={rej.value[:64]!r}: {rej.reason}",
                )
            return None
        if type(result) is CustomPublish:
            text = result.payload.decode("utf-8", "replace")
            batch.ops.append(
                AppendEvent(
                    self.cid,
                    "publish",
                    auth.identity,
                    self.meta,
                    now,
                    [{"topic": result.topic, "payload": text}],
                )
            )
            return None
        assert isinstance(result, ProvisionRequest)
        return result

    async def _unbound_publish(self, packet: Publish, now: int) -> None:
        """A PUBLISH on a provisioning-only (anonymous) connection: only ``$provision/``."""
        assert self.cid is not None
        try:
            result = dispatch(self._table_of(), packet.topic, packet.payload, now, [], [])
        except GatewayError as exc:
            self._metrics.refuse(_METRICS_PROTOCOL, "bad_request")
            self.close("bad_request", f"{packet.topic}: {exc.message}")
            self._debug("provision_refused", "bad_request", exc.message)
            return
        if type(result) is not ProvisionRequest:
            self.close("not_authenticated", f"PUBLISH to {packet.topic!r} before authenticating")
            return
        assert isinstance(result, ProvisionRequest)
        await self._provision(packet, result)

    async def _provision_publish(self, packet: Publish, req: ProvisionRequest) -> None:
        """``$provision/`` on an authenticated connection."""
        auth = self.auth
        assert auth is not None
        assert self.cid is not None
        connector = self.services.registry.get(self.cid)
        if (
            connector is not None
            and connector.settings.provisioning.auth_type == _CERTIFICATE
            and auth.identity == req.identity
        ):
            # the certificate already provisioned this identity on connect (QA script flow)
            if packet.qos:
                batch = _Batch()
                batch.packet_ids.append(packet.packet_id)
                await self._submit(batch, 0)
            return
        await self._provision(packet, req)

    async def _provision(self, packet: Publish, req: ProvisionRequest) -> None:
        """Activate ``req.identity``; PUBACK after the commit, then the reply on
        ``$provision/<identity>`` (the token, or empty in password mode), then bind
        (docs/protocol.md §3.2, §12 items 1-3).  Any refusal: send nothing, close, log."""
        assert self.cid is not None
        # Earlier acknowledgements first: the reply must be the first message after the
        # PUBACK (murano-client takes the first message on any topic as its token).
        while self._queued:
            self._acks_idle = trio.Event()
            await self._acks_idle.wait()
        devices = self.services.devices
        connector = self.services.registry.get(self.cid)
        password: str | None = None
        try:
            if connector is not None and connector.settings.provisioning.auth_type == _PASSWORD:
                password = packet.payload.decode("utf-8")
            token = await devices.activate(
                self.cid, req.identity, ip=self.info.peer_ip, meta=self.meta, password=password
            )
            device_id = await devices.device_id(self.cid, req.identity)
        except UnicodeDecodeError:
            self._metrics.refuse(_METRICS_PROTOCOL, "bad_password")
            self.close("bad_password", "the provisioning password is not UTF-8")
            return
        except GatewayError as exc:
            reason = debug_reason(exc)
            self._metrics.refuse(_METRICS_PROTOCOL, reason)
            self.close(reason, f"$provision/{req.identity}: {exc.message}")
            return
        if packet.qos:
            self.session.ack([packet.packet_id])
        self.session.publish(f"$provision/{req.identity}", (token or "").encode())
        self._debug("provisioned", None, req.identity)
        if self.attached and self.auth is not None:
            self.services.control.detach((self.auth.connector_id, self.auth.identity), self)
        await self._bind(DeviceAuth(self.cid, device_id, req.identity))

    # -- acknowledgements ------------------------------------------------------------------

    async def _ack_loop(self, receive: trio.MemoryReceiveChannel[_Pending]) -> None:
        """Await each read's commit in order, then queue and write its PUBACKs; ends when
        the reader closed the channel and everything in it was handled."""
        assert self._acker_done is not None
        try:
            await self._acks(receive)
        finally:
            self._acker_done.set()

    async def _acks(self, receive: trio.MemoryReceiveChannel[_Pending]) -> None:
        """The acker's loop.  PUBACKs of reads that committed together (one group commit
        resolves many tickets at once) are queued together and written in one go: the
        output is flushed only before the acker would block."""
        session = self.session
        output = self.output
        failed = False
        unwritten = False  # PUBACKs queued in the session and not flushed yet
        async with receive:
            while True:
                try:
                    item = receive.receive_nowait()
                except trio.WouldBlock:
                    if unwritten:
                        unwritten = False
                        await output.flush()
                        continue
                    try:
                        item = await receive.receive()
                    except trio.EndOfChannel:
                        break
                except trio.EndOfChannel:
                    break
                ticket = item.ticket
                if ticket is not None and not failed:
                    if unwritten and not ticket.done:
                        unwritten = False
                        await output.flush()
                    try:
                        await ticket.wait()
                    except (Refused, StorageFull) as exc:
                        # The device was locked, deleted or revoked while this read was on
                        # its way (the store refuses its writes), or the disk is full (the
                        # store logged that once): nothing stored, end.
                        failed = True
                        self.close(exc.reason, f"write refused: {exc.message}")
                    except Exception as exc:
                        # Nothing of this read was stored: acknowledge nothing more, and end
                        # the connection so that the client resends on its next one.
                        log.warning("write failed on %s: %r", self.info.connection_id, exc)
                        failed = True
                        self.close("internal_error", f"write failed: {exc!r}")
                if not failed:
                    if item.writes:
                        self._metrics.writes[self._writes_key] += item.writes
                    if item.packet_ids:
                        session.ack(item.packet_ids)
                        unwritten = True
                self._queued -= 1
                if not self._queued and self._acks_idle is not None:
                    self._acks_idle.set()
            if unwritten:
                await output.flush()

    # -- PushTarget ------------------------------------------------------------------------

    def push(self, pushes: Sequence[Push]) -> None:
        """Queue set values as ``$resource/<alias>/<µs>`` QoS 0 (never blocks)."""
        session = self.session
        if not pushes or self.output.broken or session.state is not SessionState.CONNECTED:
            return
        for p in pushes:
            session.publish(f"$resource/{p.alias}/{p.timestamp}", p.value.encode())
        if session.bytes_to_send > MAX_PUSH_BUFFER:
            self.kick("slow_consumer")
            return
        if not self._handling:  # else the reader's flush after this read writes them
            self.output.kick()

    def kick(self, reason: str) -> None:
        """End this connection (``duplicate_connection`` when a newer one took over)."""
        self.close(reason, "closed by the gateway")

    def close(self, reason: str, detail: str) -> None:
        """End the session for ``reason`` and stop reading; in-flight PUBACKs still drain."""
        self.session.close(reason, detail)
        self._stopped = True
        if self._reading:
            # only a reader blocked in receive_some is cancelled: one busy with a read
            # finishes queueing that read's acknowledgements and then sees the end
            self._reader_scope.cancel()

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        """Detach, record the disconnect, publish the will of an unclean end, log why.
        Synchronous: it runs in a ``finally`` even when the task is being cancelled."""
        closed = self.session.closed or Closed("server_shutdown", "the gateway stopped")
        reason = closed.reason
        if reason == "peer_closed" and self.info.tls:
            reason = "ssl_closed"
        auth = self.auth
        if auth is not None:
            if self.attached:
                self.services.control.detach((auth.connector_id, auth.identity), self)
            will = self.session.will
            if will is not None and not closed.clean:
                now = now_us()
                batch = _Batch()
                if self._dispatch(will, now, batch) is None and batch:
                    # nobody awaits it: a failure goes to the store's on_failure (logged)
                    self.services.store.submit(self._ops(batch, now), detached=True)
            # offline only if this is still the device's current connection (the store
            # compares connection ids: a newer connection may already have taken over)
            self.services.devices.disconnected(auth, self.meta, reason)
        self._debug("disconnect", reason, closed.detail)

    def _debug(self, event: str, reason: str | None, detail: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s: %s", self.info.connection_id, event, reason, detail)
        self.services.debug(
            LogRecord(
                kind="debug",
                timestamp=now_us(),
                connector_id=self.cid,
                ip=self.info.peer_ip,
                identity=self.auth.identity if self.auth else None,
                connection_id=self.info.connection_id,
                protocol=_PROTOCOL,
                event=event,
                reason=reason,
                detail=detail,
            )
        )


def _check_anonymous(connector: Connector) -> None:
    """An anonymous CONNECT may only provision: refuse it (CONNACK 5) when it cannot."""
    prov = connector.settings.provisioning
    if not prov.enabled:
        raise Refused(
            "provisioning is disabled for this connector",
            reason="provisioning_disabled",
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
    if prov.auth_type == _CERTIFICATE:
        raise Refused(
            "this connector authenticates devices by TLS client certificate",
            reason="certificate_required",
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
