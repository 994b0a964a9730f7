"""The cluster bus: the nodes of a cluster tell each other over NATS (``--bus nats://…``).

Theory of operation
-------------------
In a cluster every node is a whole ``gateway serve`` (its supervisor, store owner and
workers, docs/architecture.md "The node") over one shared store (PostgreSQL); what crosses
device connections must now cross nodes too: a value set through node B's management API
reaches the device connected to node A, a second connection of an identity on node A closes
the first on node B, a lock drops the device's sessions wherever they are, the event-log
long-polls and the live log of any node see the whole cluster.

All of that is already carried by **committed events** (``gateway/bus/api.py``): pushes,
kicks and ``duplicate_connection`` are each process's own reactions to them, so the cluster
bus only has to deliver every node's committed events to every other node, in order per
connector.  They go through **JetStream** (stream :data:`STREAM`, subject
``gateway.events.<connector>``): a node that loses NATS for a moment, or a NATS server that
restarts, resumes from the last stream sequence it saw (an ordered consumer), so no push or
kick is lost to a reconnect, and the stream is there for outside consumers that want the
event feed by connector.  Nothing else is durable, so the rest rides **core NATS** on
:data:`CONTROL_SUBJECT`: registry changes (a node that reconnects re-reads the whole registry
instead), live-log interest (each node repeats its own every :data:`INTEREST_EVERY_S`; a
node's entry expires after :data:`INTEREST_TTL_S`) and the debug-log records sent while
some other node wants them.  Metrics stay per node (each node's ``/metrics``).

:class:`ClusterBus` wraps the node's own bus (the store owner's hub, or the single process's
:class:`~gateway.bus.api.LocalBus`): everything published goes to both; what arrives from
the other nodes goes to a :class:`ClusterInbox` (the composition root's: the store owner's
fan-out, then its workers through the local bus).  A node never receives its own messages
(its name is in each one).

Threads: nats-py is asyncio; it runs on its own event loop in one daemon thread per process
(docs/decisions.md "Cluster bus").  The Trio side never waits for it: publishing appends to
a deque (bounded: while NATS is unreachable the oldest messages are dropped and counted, the
store still has every event) and wakes the loop with ``call_soon_threadsafe``; what arrives
is handed to Trio with the run's token (``TrioToken.run_sync_soon``) into an unbounded memory
channel read by :meth:`ClusterBus.run`.  Committed events are published one JetStream
message per connector per drain of the deque, each awaited (ordered) and retried under a
``Nats-Msg-Id`` (the stream drops a retry that had in fact been stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import msgspec
import trio

from gateway.bus.api import Bus, MetricsSnapshot
from gateway.model import LogRecord
from gateway.store.api import CommittedEvent

__all__ = [
    "CONTROL_SUBJECT",
    "EVENTS_SUBJECT",
    "STREAM",
    "ClusterBus",
    "ClusterInbox",
    "events_subject",
]

log = logging.getLogger(__name__)

STREAM = "GATEWAY_EVENTS"
EVENTS_SUBJECT = "gateway.events"  # + "." + connector id
CONTROL_SUBJECT = "gateway.control"
STREAM_MAX_AGE_S = 3600.0  # the stream is a delivery channel, not the event log (the store is)
STREAM_MAX_BYTES = 1 << 30
DUPLICATE_WINDOW_S = 120.0
INTEREST_EVERY_S = 2.0
INTEREST_TTL_S = 3 * INTEREST_EVERY_S
MAX_QUEUED = 20_000  # messages waiting for NATS; the oldest go first when it is gone long
MAX_MESSAGE_BYTES = 512 * 1024  # under NATS's default max_payload (1 MiB)
START_TIMEOUT_S = 10.0  # serve without NATS after this (it keeps trying)
RECONNECT_WAIT_S = 0.5
PUBLISH_TIMEOUT_S = 2.0
HEARTBEAT_S = 1.0  # the ordered consumer's idle heartbeat: a lost consumer is redone in 2 s

_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def events_subject(connector_id: str) -> str:
    """The JetStream subject of a connector's committed events (characters NATS gives a
    meaning to are replaced: an id is a single subject token)."""
    return f"{EVENTS_SUBJECT}.{_SUBJECT_UNSAFE.sub('_', connector_id) or '_'}"


class Published(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One JetStream message: committed events of one connector, in commit order."""

    node: str
    events: list[CommittedEvent]


class _Control(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    node: str


class RegistryChanged(_Control, frozen=True, gc=False):
    connector_id: str


class Interest(_Control, frozen=True, gc=False):
    active: bool


class LogMsg(_Control, frozen=True, gc=False):
    record: LogRecord


Control: TypeAlias = RegistryChanged | Interest | LogMsg

_encoder = msgspec.msgpack.Encoder()
_published = msgspec.msgpack.Decoder(Published)
_control = msgspec.msgpack.Decoder(Control)


class ClusterInbox(Protocol):
    """What the cluster bus delivers into a node (from the other nodes)."""

    def events(self, events: Sequence[CommittedEvent]) -> None:
        """Another node's committed events (every type), in its commit order."""
        ...

    async def registry_changed(self, connector_id: str | None) -> None:
        """Re-read connector ``connector_id`` (None: all of them, after a reconnect)."""
        ...

    def log(self, record: LogRecord) -> None:
        """A debug-log record from another node, for this node's live-log subscribers."""
        ...


class _Up(msgspec.Struct, frozen=True):
    """From the NATS thread: (re)connected and subscribed (``first``: the first time)."""

    first: bool


class _Down(msgspec.Struct, frozen=True):
    """From the NATS thread: the connection is lost (nats-py keeps reconnecting)."""


_FromNats: TypeAlias = _Up | _Down | Published | Control


class ClusterBus:
    """The :class:`~gateway.bus.api.Bus` of a node in a cluster (see the module docstring):
    ``local`` is the node's own bus, ``node`` this node's name (unique in the cluster)."""

    def __init__(self, url: str, node: str, local: Bus) -> None:
        self.url = url
        self.node = node
        self.local = local
        # what waits for the NATS thread (it pops, this side appends: deque ops are atomic)
        self.outgoing: deque[tuple[str, bytes] | Sequence[CommittedEvent]] = deque()
        self._thread: _NatsThread | None = None
        self.run_id = secrets.token_hex(4)  # message ids: a retry is dropped, not a restart
        self._local_logs = False
        self._remote_logs: dict[str, float] = {}  # node → when its interest expires
        self._changed = trio.Event()
        self.connected = False
        self.dropped = 0  # messages dropped while NATS was unreachable too long
        self.received = 0  # messages from other nodes

    # -- Bus ---------------------------------------------------------------------------

    def publish_events(self, events: Sequence[CommittedEvent]) -> None:
        self.local.publish_events(events)
        if events:
            self._post(events)

    def publish_registry(self, connector_id: str) -> None:
        self.local.publish_registry(connector_id)
        self._post_control(RegistryChanged(self.node, connector_id))

    def publish_log(self, record: LogRecord) -> None:
        self.local.publish_log(record)
        if self.logs_wanted:
            self._post_control(LogMsg(self.node, record))

    def publish_tls_reload(self) -> None:
        self.local.publish_tls_reload()  # each node reloads its own files

    def want_logs(self, active: bool) -> None:
        self._local_logs = active
        self._update_local_interest()
        self._post_control(Interest(self.node, active))

    @property
    def logs_wanted(self) -> bool:
        if not self._remote_logs:
            return False
        now = trio.current_time()
        return any(t > now for t in self._remote_logs.values())

    async def peer_metrics(self) -> list[MetricsSnapshot]:
        return await self.local.peer_metrics()  # /metrics is per node

    # -- to the NATS thread ------------------------------------------------------------

    def _post(self, item: tuple[str, bytes] | Sequence[CommittedEvent]) -> None:
        out = self.outgoing
        out.append(item)
        if len(out) > MAX_QUEUED:
            out.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("NATS unreachable: %d bus messages dropped so far", self.dropped)
        thread = self._thread
        if thread is not None:
            thread.wake()

    def _post_control(self, msg: Control) -> None:
        self._post((CONTROL_SUBJECT, _encoder.encode(msg)))

    def _update_local_interest(self) -> None:
        # the node's processes forward debug records while anyone, here or elsewhere, watches
        self.local.want_logs(self._local_logs or self.logs_wanted)

    # -- running -----------------------------------------------------------------------

    async def wait_connected(self, connected: bool = True) -> None:
        """Return once subscribed to NATS (or, with False, once the connection is lost)."""
        while self.connected != connected:
            await self._changed.wait()

    async def run(
        self, inbox: ClusterInbox, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Stay connected to NATS until cancelled; ``started`` once subscribed (or after
        :data:`START_TIMEOUT_S` without NATS: the node serves, the bus keeps trying)."""
        send, recv = trio.open_memory_channel[_FromNats](math.inf)
        thread = _NatsThread(self, trio.lowlevel.current_trio_token(), send)
        self._thread = thread
        thread.start()
        started = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._interest_loop)
                with trio.move_on_after(START_TIMEOUT_S) as wait:
                    async for msg in recv:
                        if isinstance(msg, _Up):
                            self._up()
                            break
                if wait.cancelled_caught:
                    log.warning("NATS at %s unreachable; serving, the bus keeps trying", self.url)
                task_status.started()
                started = True
                async for msg in recv:
                    self._dispatch(msg, inbox, nursery)
        finally:
            self._thread = None
            with trio.CancelScope(shield=True), trio.move_on_after(PUBLISH_TIMEOUT_S + 1):
                thread.stop()  # publishes what is queued first, within its timeout
                await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
            if not started:
                log.info("cluster bus stopped before it started")

    def _up(self) -> None:
        self.connected = True
        self._changed.set()
        self._changed = trio.Event()
        if self._local_logs:
            self._post_control(Interest(self.node, True))

    def _dispatch(self, msg: _FromNats, inbox: ClusterInbox, nursery: trio.Nursery) -> None:
        if isinstance(msg, Published):
            self.received += 1
            inbox.events(msg.events)
        elif isinstance(msg, LogMsg):
            inbox.log(msg.record)
        elif isinstance(msg, RegistryChanged):
            nursery.start_soon(inbox.registry_changed, msg.connector_id)
        elif isinstance(msg, Interest):
            if msg.active:
                self._remote_logs[msg.node] = trio.current_time() + INTEREST_TTL_S
            else:
                self._remote_logs.pop(msg.node, None)
            self._update_local_interest()
        elif isinstance(msg, _Up):
            self._up()
            log.info("cluster bus reconnected: re-reading the registry")
            nursery.start_soon(inbox.registry_changed, None)
        elif isinstance(msg, _Down):
            self.connected = False
            self._changed.set()
            self._changed = trio.Event()

    async def _interest_loop(self) -> None:
        """Repeat this node's interest; forget the other nodes' that expired."""
        while True:
            await trio.sleep(INTEREST_EVERY_S)
            if self._local_logs:
                self._post_control(Interest(self.node, True))
            now = trio.current_time()
            expired = [n for n, t in self._remote_logs.items() if t <= now]
            for n in expired:
                del self._remote_logs[n]
            if expired:
                self._update_local_interest()


class _NatsThread(threading.Thread):
    """The asyncio side: one nats-py connection, the JetStream publisher and subscribers."""

    def __init__(
        self,
        bus: ClusterBus,
        token: trio.lowlevel.TrioToken,
        send: trio.MemorySendChannel[_FromNats],
    ) -> None:
        super().__init__(name=f"nats-{bus.node}", daemon=True)
        self.bus = bus
        self.token = token
        self.send = send
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._halt: asyncio.Event | None = None
        self._loop_ready = threading.Event()

    # -- called from the Trio thread ---------------------------------------------------

    def wake(self) -> None:
        loop, wake = self.loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wake.set)

    def stop(self) -> None:
        self._loop_ready.wait(1.0)
        loop, stop = self.loop, self._halt
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    # -- the thread --------------------------------------------------------------------

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("the cluster bus thread failed")

    def _to_trio(self, msg: _FromNats) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self.send.send_nowait, msg)

    async def _main(self) -> None:
        import nats

        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._halt = asyncio.Event()
        self._loop_ready.set()
        bus = self.bus
        first = True

        async def disconnected() -> None:
            self._to_trio(_Down())

        async def reconnected() -> None:
            self._to_trio(_Up(first=False))

        async def error(exc: Exception) -> None:
            log.debug("NATS: %r", exc)

        nc: Any = None
        while nc is None:
            try:
                nc = await nats.connect(
                    bus.url,
                    name=f"gateway {bus.node}",
                    no_echo=True,  # our own control messages stay here
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_WAIT_S,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                )
            except Exception as exc:  # NoServersError, OSError, timeouts
                if first:
                    log.warning("NATS at %s: %r; retrying", bus.url, exc)
                    first = False
                if await self._stopped(RECONNECT_WAIT_S):
                    return
        try:
            js = nc.jetstream()
            while not await self._subscribe(nc, js):
                if await self._stopped(RECONNECT_WAIT_S):
                    return
            self._to_trio(_Up(first=True))
            await self._publish_loop(nc, js)
        finally:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception as exc:
                log.debug("NATS close: %r", exc)

    async def _stopped(self, delay: float) -> bool:
        assert self._halt is not None
        try:
            await asyncio.wait_for(self._halt.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js.api import StorageType, StreamConfig

        config = StreamConfig(
            name=STREAM,
            subjects=[f"{EVENTS_SUBJECT}.>"],
            storage=StorageType.FILE,
            max_age=STREAM_MAX_AGE_S,
            max_bytes=STREAM_MAX_BYTES,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        try:
            await js.add_stream(config)
        except Exception as exc:  # exists with another configuration: ours wins
            log.info("stream %s: %r; updating it", STREAM, exc)
            await js.update_stream(config)

    async def _subscribe(self, nc: Any, js: Any) -> bool:
        from nats.js.api import DeliverPolicy

        node = self.bus.node

        async def on_events(msg: Any) -> None:
            try:
                pub = _published.decode(msg.data)
            except msgspec.DecodeError:
                log.error("garbage on %s", msg.subject)
                return
            if pub.node != node:
                self._to_trio(pub)

        async def on_control(msg: Any) -> None:
            try:
                ctl = _control.decode(msg.data)
            except msgspec.DecodeError:
                log.error("garbage on %s", msg.subject)
                return
            if ctl.node != node:
                self._to_trio(ctl)

        try:
            await self._ensure_stream(js)
            await nc.subscribe(CONTROL_SUBJECT, cb=on_control)
            await js.subscribe(
                f"{EVENTS_SUBJECT}.>",
                cb=on_events,
                ordered_consumer=True,
                idle_heartbeat=HEARTBEAT_S,
                deliver_policy=DeliverPolicy.NEW,
            )
        except Exception as exc:
            log.warning("NATS JetStream not ready: %r; retrying", exc)
            return False
        return True

    def _take(self) -> list[tuple[str, bytes, str | None]]:
        """Everything queued, as (subject, data, message id): events coalesced into one
        message per connector (split under :data:`MAX_MESSAGE_BYTES`), in order."""
        out = self.bus.outgoing
        node = self.bus.node
        run_id = self.bus.run_id
        by_connector: dict[str, list[CommittedEvent]] = {}
        control: list[tuple[str, bytes, str | None]] = []
        while True:
            try:
                item = out.popleft()
            except IndexError:  # empty (the Trio side may drop the oldest meanwhile)
                break
            if isinstance(item, tuple):
                control.append((item[0], item[1], None))
            else:
                for ev in item:
                    by_connector.setdefault(ev.connector_id, []).append(ev)
        msgs: list[tuple[str, bytes, str | None]] = []
        for cid, events in by_connector.items():
            for chunk in _chunks(node, events):
                msg_id = f"{node}:{run_id}:{cid}:{chunk[0].seq}-{chunk[-1].seq}"
                msgs.append((events_subject(cid), _encoder.encode(Published(node, chunk)), msg_id))
        return control + msgs

    async def _publish_loop(self, nc: Any, js: Any) -> None:
        assert self._wake is not None
        assert self._halt is not None
        wake, stop = self._wake, self._halt
        while True:
            if not self.bus.outgoing:
                if stop.is_set():
                    return
                waiter = asyncio.ensure_future(wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                wake.clear()
            for subject, data, msg_id in self._take():
                if msg_id is None:
                    try:
                        await nc.publish(subject, data)  # core: nats-py buffers while away
                    except Exception as exc:
                        log.debug("NATS control message lost: %r", exc)
                    continue
                await self._publish_durable(js, subject, data, msg_id)

    async def _publish_durable(self, js: Any, subject: str, data: bytes, msg_id: str) -> None:
        """Publish to JetStream until it acknowledges (retries carry the same message id,
        so the stream keeps one copy); on stop, give up after one timeout."""
        assert self._halt is not None
        warned = False
        while True:
            try:
                await js.publish(
                    subject, data, timeout=PUBLISH_TIMEOUT_S, headers={"Nats-Msg-Id": msg_id}
                )
                return
            except Exception as exc:
                if self._halt.is_set():
                    log.warning("stopping: committed events not published: %r", exc)
                    return
                if not warned:
                    log.warning("JetStream publish failed (%r); retrying", exc)
                    warned = True
                if "stream" in repr(exc).lower():
                    try:
                        await self._ensure_stream(js)
                    except Exception as exc2:
                        log.debug("stream: %r", exc2)
                if await self._stopped(RECONNECT_WAIT_S):
                    return


def _chunks(node: str, events: list[CommittedEvent]) -> list[list[CommittedEvent]]:
    """``events`` in consecutive pieces whose messages stay under the size limit."""
    if len(events) <= 1 or len(_encoder.encode(Published(node, events))) <= MAX_MESSAGE_BYTES:
        return [events]
    half = len(events) // 2
    return _chunks(node, events[:half]) + _chunks(node, events[half:])
