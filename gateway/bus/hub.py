"""The store owner's end of the node bus: workers' writes in, commits and events out.

Theory of operation
-------------------
Every worker keeps one Unix-socket connection to the hub (docs/architecture.md "The
node").  Per connection the hub runs three tasks:

* the **reader** decodes frames: a :class:`~gateway.bus.frames.Submit` goes straight into
  the store (``store.submit``: the writer thread groups it with everything else queued, so
  one commit spans every worker) and its ticket into the acker's queue; a ``Log`` goes to
  the live-log hub; a ``Snapshot`` answers :meth:`NodeHub.peer_metrics`;
* the **acker** awaits the tickets in submission order and answers each ``Submit`` with
  exactly one ``Committed`` (after the commit) or ``Failed`` (the error as
  :class:`~gateway.errors.ErrorInfo`);
* the **sender** flushes the connection's buffer (:class:`~gateway.bus.link.Link`).

Committed events are broadcast in commit order (``publish_events``, called by the store's
``on_events``), filtered to :data:`~gateway.bus.api.WORKER_EVENT_TYPES`.

Failure handling: when a worker's connection breaks, its queued tickets still commit (the
writes were valid) but nobody is told: the worker has already failed them, so nothing was
acknowledged and the devices resend.  The devices still marked online through one of its
connections (ids start with the prefix its ``Hello`` announced) go offline with a
``disconnect`` event of reason ``worker_lost`` (:class:`~gateway.store.api.DropConnections`):
their own bookkeeping died with the worker.  A worker that disconnects leaves its last metrics
snapshot's counters in a base that :meth:`NodeHub.peer_metrics` adds, so node totals never
go down.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence

import msgspec
import trio

from gateway.bus.api import WORKER_EVENT_TYPES, MetricsSnapshot
from gateway.bus.frames import (
    Committed,
    Events,
    Failed,
    Frame,
    Hello,
    Interest,
    Log,
    Registry,
    Snapshot,
    SnapshotRequest,
    Submit,
    TlsReload,
)
from gateway.bus.link import Link
from gateway.clock import now_us
from gateway.errors import GatewayError, StoreFailed, error_info
from gateway.model import LogRecord
from gateway.store.api import CommittedEvent, DropConnections, Store, Ticket

__all__ = ["SNAPSHOT_TIMEOUT_S", "NodeHub"]

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT_S = 1.0  # a worker that answers slower is shown by its last snapshot


class _Peer:
    __slots__ = ("last", "link", "pid", "prefix", "worker")

    def __init__(self, link: Link, worker: int, pid: int, prefix: str) -> None:
        self.link = link
        self.worker = worker
        self.pid = pid
        self.prefix = prefix
        self.last: MetricsSnapshot | None = None


class NodeHub:
    """The :class:`~gateway.bus.api.Bus` of the store owner (see the module docstring)."""

    def __init__(self) -> None:
        self._peers: set[_Peer] = set()
        self._interest = False
        self._base: MetricsSnapshot | None = None  # counters of workers that are gone
        self._snap_id = 0
        self._snap_waiting: dict[_Peer, trio.Event] = {}

    # -- Bus ---------------------------------------------------------------------------

    def publish_events(self, events: Sequence[CommittedEvent]) -> None:
        wanted = [e for e in events if e.type in WORKER_EVENT_TYPES]
        if wanted and self._peers:
            frame = Events(wanted)
            for peer in self._peers:
                peer.link.send(frame)

    def publish_registry(self, connector_id: str) -> None:
        self._broadcast(Registry(connector_id))

    def publish_log(self, record: LogRecord) -> None:
        return None  # the owner's records are published where the subscribers are: here

    def publish_tls_reload(self) -> None:
        self._broadcast(TlsReload())

    def want_logs(self, active: bool) -> None:
        self._interest = active
        self._broadcast(Interest(active))

    @property
    def logs_wanted(self) -> bool:
        return False

    async def peer_metrics(self) -> list[MetricsSnapshot]:
        self._snap_id += 1
        waiting = {peer: trio.Event() for peer in self._peers}
        self._snap_waiting = waiting
        for peer in waiting:
            peer.link.send(SnapshotRequest(self._snap_id))
        with trio.move_on_after(SNAPSHOT_TIMEOUT_S):
            for ev in waiting.values():
                await ev.wait()
        out = [p.last for p in self._peers if p.last is not None]
        if self._base is not None:
            out.append(self._base)
        return out

    @property
    def workers(self) -> list[tuple[int, int]]:
        """(worker index, pid) of the connected workers."""
        return sorted((p.worker, p.pid) for p in self._peers)

    def _broadcast(self, frame: Frame) -> None:
        for peer in self._peers:
            peer.link.send(frame)

    # -- serving -----------------------------------------------------------------------

    async def serve(
        self,
        listener: trio.SocketListener,
        store: Store,
        on_log: Callable[[LogRecord], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept workers on ``listener`` until cancelled (then every connection closes)."""
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._serve_peer, stream, store, on_log)

    async def _serve_peer(
        self, stream: trio.SocketStream, store: Store, on_log: Callable[[LogRecord], None]
    ) -> None:
        link = Link(stream)
        peer: _Peer | None = None
        acks_send, acks_recv = trio.open_memory_channel[tuple[int, Ticket]](math.inf)
        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(link.run_sender)
                nursery.start_soon(self._ack_loop, link, acks_recv)
                async for frame in link.frames():
                    if type(frame) is Submit:
                        acks_send.send_nowait((frame.id, store.submit(frame.ops)))
                    elif type(frame) is Log:
                        on_log(frame.record)
                    elif type(frame) is Snapshot:
                        if peer is not None:
                            peer.last = frame.metrics
                            ev = self._snap_waiting.get(peer)
                            if ev is not None:
                                ev.set()
                    elif type(frame) is Hello:
                        peer = _Peer(link, frame.worker, frame.pid, frame.connection_prefix)
                        self._peers.add(peer)
                        link.send(Interest(self._interest))
                        log.info("worker %d (pid %d) connected", frame.worker, frame.pid)
                    else:
                        raise ValueError(f"unexpected frame {type(frame).__name__}")
                acks_send.close()
                nursery.cancel_scope.cancel()
        # except*: the nursery hands a broken stream (ECONNRESET from a worker killed with
        # bytes it never read, not only an end of stream) over in a group
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            log.warning("worker connection lost: %r", group.exceptions[0])
        except* (ValueError, msgspec.DecodeError) as group:
            log.error("worker connection sent garbage, closing it: %r", group.exceptions[0])
        finally:
            if peer is not None:
                self._peers.discard(peer)
                self._snap_waiting.pop(peer, None)
                if peer.last is not None:
                    gone = peer.last.counters_only()
                    self._base = gone if self._base is None else self._base.plus(gone)
                log.info("worker %d (pid %d) disconnected", peer.worker, peer.pid)
                if peer.prefix:
                    # its devices' own disconnect bookkeeping may never run: take offline
                    # whatever is still marked online through one of its connections
                    store.submit([DropConnections(peer.prefix, now_us())], detached=True)

    async def _ack_loop(
        self, link: Link, acks: trio.MemoryReceiveChannel[tuple[int, Ticket]]
    ) -> None:
        async with acks:
            async for sub_id, ticket in acks:
                try:
                    results = await ticket.wait()
                except GatewayError as exc:
                    link.send(Failed(sub_id, error_info(exc)))
                except Exception as exc:  # not the store's contract, but never silent
                    log.exception("submission %d failed outside the error tree", sub_id)
                    link.send(Failed(sub_id, error_info(StoreFailed(repr(exc)))))
                else:
                    link.send(Committed(sub_id, results))


def hub_address(data_dir: str) -> str:
    """The hub's abstract Unix socket name for a data directory (no file to clean up; the
    data directory's lock makes it unique on the host)."""
    import hashlib

    digest = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:20]
    return f"\0gateway-hub-{digest}"
