"""The cluster bus (gateway/bus/cluster.py) between two "nodes" in one Trio run, over a real
nats-server with JetStream: committed events cross in commit order and never come back to
their node, registry changes and live-log interest cross, debug records follow interest,
and a NATS restart loses nothing that was committed meanwhile."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import trio

from gateway.bus.api import LocalBus
from gateway.bus.cluster import ClusterBus, events_subject
from gateway.model import LogRecord
from gateway.store.api import CommittedEvent
from gateway.testing.cluster import _nats_server, free_port

pytestmark = pytest.mark.needs_tool


class Nats:
    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = _nats_server()
        assert server is not None, "nats-server (scripts/bootstrap --system)"
        self.proc = subprocess.Popen(
            [server, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Nats]:
    n = Nats(tmp_path / "js")
    n.start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.kill()


class RecordingInbox:
    """A :class:`~gateway.bus.cluster.ClusterInbox` that records what arrives."""

    def __init__(self) -> None:
        self.got: list[CommittedEvent] = []
        self.registry: list[str | None] = []
        self.logs: list[LogRecord] = []
        self.changed = trio.Event()

    def _tick(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(20):
            while not predicate():
                await self.changed.wait()

    def events(self, events: Sequence[CommittedEvent]) -> None:
        self.got.extend(events)
        self._tick()

    async def registry_changed(self, connector_id: str | None) -> None:
        self.registry.append(connector_id)
        self._tick()

    def log(self, record: LogRecord) -> None:
        self.logs.append(record)
        self._tick()


def event(seq: int, cid: str = "c1", type_: str = "data_out") -> CommittedEvent:
    return CommittedEvent(cid, seq, seq, type_, "dev1", None, None, None, None, [{"values": {}}])


class Recorder(LocalBus):
    """The node's own bus: what the cluster bus hands it."""

    def __init__(self) -> None:
        self.published: list[CommittedEvent] = []
        self.interest: list[bool] = []
        self.changed = trio.Event()

    def publish_events(self, events: Sequence[CommittedEvent]) -> None:
        self.published.extend(events)

    def want_logs(self, active: bool) -> None:
        self.interest.append(active)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_interest(self, active: bool) -> None:
        with trio.fail_after(10):
            while self.interest[-1:] != [active]:
                await self.changed.wait()


def test_subject_is_one_token() -> None:
    assert events_subject("demo") == "gateway.events.demo"
    assert events_subject("a.b*>c") == "gateway.events.a_b__c"


async def test_events_registry_and_logs_cross_nodes(nats: Nats) -> None:
    local_a, local_b = Recorder(), Recorder()
    a = ClusterBus(nats.url, "a", local_a)
    b = ClusterBus(nats.url, "b", local_b)
    ia, ib = RecordingInbox(), RecordingInbox()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run, ia)
        await nursery.start(b.run, ib)
        assert a.connected
        assert b.connected
        for seq in range(1, 301):  # two connectors, interleaved
            a.publish_events([event(seq, "c1"), event(seq, "c2")])
        await ib.wait(lambda: len(ib.got) == 600)
        for cid in ("c1", "c2"):
            assert [e.seq for e in ib.got if e.connector_id == cid] == list(range(1, 301))
        assert len(local_a.published) == 600  # the node's own processes got them at once
        assert ia.got == []  # never back to the node that committed them
        assert local_b.published == []  # b's inbox decides what its workers get

        a.publish_registry("c1")
        await ib.wait(lambda: ib.registry == ["c1"])

        # no interest: no records cross
        assert not a.logs_wanted
        a.publish_log(LogRecord(kind="debug", timestamp=1, connector_id="c1", ip="10.0.0.1"))
        b.want_logs(True)
        assert local_b.interest == [True]
        await local_a.wait_interest(True)  # a's processes forward theirs now
        assert a.logs_wanted
        a.publish_log(LogRecord(kind="debug", timestamp=2, connector_id="c1", ip="10.0.0.2"))
        await ib.wait(lambda: len(ib.logs) == 1)
        assert ib.logs[0].timestamp == 2
        b.want_logs(False)
        await local_a.wait_interest(False)
        assert not a.logs_wanted
        nursery.cancel_scope.cancel()


async def test_nats_restart_loses_nothing(nats: Nats) -> None:
    a = ClusterBus(nats.url, "a", LocalBus())
    b = ClusterBus(nats.url, "b", LocalBus())
    ia, ib = RecordingInbox(), RecordingInbox()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run, ia)
        await nursery.start(b.run, ib)
        for seq in range(1, 101):
            a.publish_events([event(seq)])
        await ib.wait(lambda: len(ib.got) == 100)
        nats.kill()
        await a.wait_connected(False)
        for seq in range(101, 201):  # committed while NATS is gone: queued
            a.publish_events([event(seq)])
        nats.start()
        for seq in range(201, 301):
            a.publish_events([event(seq)])
        await ib.wait(lambda: len(ib.got) >= 300)
        await b.wait_connected(True)
        assert [e.seq for e in ib.got] == list(range(1, 301))
        assert None in ib.registry  # a reconnect re-reads the whole registry
        nursery.cancel_scope.cancel()
