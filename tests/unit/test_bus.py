"""The bus seam (gateway/bus/): frames, the control hub's reactions to committed events, and
the node bus end to end in one Trio run (a real SQLite store behind the hub, a worker's
client and remote store over a real Unix socket)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import trio

from gateway.bus.api import MetricsSnapshot
from gateway.bus.client import NodeClient, RemoteStore
from gateway.bus.frames import (
    MAX_FRAME,
    Committed,
    Events,
    Failed,
    FrameReader,
    Hello,
    Submit,
    encode,
)
from gateway.bus.hub import NodeHub, hub_address
from gateway.bus.link import connect_unix, listen_unix
from gateway.errors import (
    AlreadyExists,
    GatewayError,
    Refused,
    StorageFull,
    StoreFailed,
    debug_reason,
    error_info,
    rebuild_error,
)
from gateway.metrics import Metrics
from gateway.services.connectors import Connector, ConnectorSettings, Registry, Resource
from gateway.services.control import ControlHub, Push
from gateway.store.api import (
    CommittedEvent,
    CreateConnector,
    CreateDevice,
    DataIn,
    EventMeta,
    ImportOutcome,
    Op,
    PointWrite,
)
from gateway.store.factory import read_side
from gateway.store.sqlite import open_store

META = EventMeta("conn-1", "10.0.0.1", "murano:v1/mqtt")


def test_frames_survive_any_split() -> None:
    frames = [
        Hello(1, 42),
        Submit(7, [DataIn("c", 1, "d", [PointWrite("a", "1", 2)], META, 3)]),
        Committed(7, [1, None, True, "x", ImportOutcome(2, ["e"])]),
        Failed(8, error_info(Refused("device is locked", reason="locked"))),
        Events([CommittedEvent("c", 5, 9, "data_out", "d", None, None, "api", None, [])]),
    ]
    out = bytearray()
    for f in frames:
        encode(f, out)
    reader = FrameReader()
    got = []
    for i in range(len(out)):  # one byte at a time
        got += reader.feed(bytes(out[i : i + 1]))
    assert got == frames
    assert FrameReader().feed(bytes(out)) == frames


def test_a_full_disk_crosses_the_bus_as_storage_full() -> None:
    """A worker's write refused by the owner's full disk is StorageFull on the worker's
    side too: HTTP 507, MQTT debug reason disk_full (docs/decisions.md "Disk full")."""
    out = bytearray()
    encode(Failed(3, error_info(StorageFull("the gateway's disk is full"))), out)
    (frame,) = FrameReader().feed(bytes(out))
    assert isinstance(frame, Failed)
    err = rebuild_error(frame.error)
    assert type(err) is StorageFull
    assert (err.message, err.http_status, err.code) == (
        "the gateway's disk is full",
        507,
        "storage_full",
    )
    assert debug_reason(err) == "disk_full"
    assert isinstance(err, StoreFailed)


def test_an_oversized_or_garbage_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="frame of"):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(msgspec.DecodeError):
        FrameReader().feed(b"\0\0\0\2\x91\x01")


class Target:
    def __init__(self) -> None:
        self.pushes: list[Push] = []
        self.kicked: list[str] = []

    def push(self, pushes: Sequence[Push]) -> None:
        self.pushes.extend(pushes)

    def kick(self, reason: str) -> None:
        self.kicked.append(reason)


def _registry() -> Registry:
    reg = Registry("localhost")
    reg.put(
        Connector("c", "C", "", "c.m2.localhost", "c.devmode-m2.localhost", ConnectorSettings(), 0),
        {
            "data_out": Resource("data_out", settable=True, sync=True),
            "mode": Resource("mode", settable=True, sync=False),
        },
    )
    return reg


def _ev(seq: int, kind: str, conn: str | None = None, payload: object = None) -> CommittedEvent:
    return CommittedEvent("c", seq, 100, kind, "d", conn, None, None, None, payload)


def test_a_newer_connect_elsewhere_closes_the_session_here() -> None:
    hub = ControlHub(_registry())
    here = Target()
    hub.attach(("c", "d"), "A", here)
    hub.on_events([_ev(10, "connect", "A")])  # our own connect: its seq is remembered
    hub.on_events([_ev(11, "connect", "B")])  # another process's, committed later
    assert here.kicked == ["duplicate_connection"]
    assert not hub.online(("c", "d"))


def test_an_older_connect_elsewhere_leaves_a_newer_session_alone() -> None:
    hub = ControlHub(_registry())
    here = Target()
    hub.attach(("c", "d"), "B", here)
    # another process's connect commits before ours does: ours is the newer one
    hub.on_events([_ev(10, "connect", "A")])
    hub.on_events([_ev(11, "connect", "B")])
    assert here.kicked == []
    # a second connection on this process replaces the first at once
    again = Target()
    hub.attach(("c", "d"), "C", again)
    assert here.kicked == ["duplicate_connection"]
    hub.on_events([_ev(12, "connect", "C")])
    assert again.kicked == []


async def test_set_values_push_sync_resources_and_kicks_end_long_polls() -> None:
    hub = ControlHub(_registry())
    target = Target()
    hub.attach(("c", "d"), "A", target)
    wake = hub.change_event(("c", "d"))
    values = [{"timestamp": 7, "values": {"data_out": "go", "mode": "b"}}]
    hub.on_events([_ev(1, "data_out", payload=values), _ev(2, "data_in", payload=values)])
    assert target.pushes == [Push("data_out", "go", 7)]  # mode is not sync: not pushed
    await wake.wait()  # woken, no error
    wake = hub.change_event(("c", "d"))
    hub.on_events([_ev(3, "locked")])
    assert target.kicked == ["locked"]
    with pytest.raises(Refused) as info:
        await wake.wait()
    assert (info.value.reason, info.value.http_status) == ("locked", 403)


def test_metrics_snapshots_sum_and_keep_counters() -> None:
    m = Metrics()
    m.packet("mqtt", "in", 3)
    m.connection_opened("mqtt", "c")
    a = MetricsSnapshot.of("worker-1", m, mqtt_sessions=1, log_records=2)
    m.connector_refusal("c", "locked")
    a = MetricsSnapshot.of("worker-1", m, mqtt_sessions=1, log_records=2)
    # every family travels, through msgpack too
    assert set(a.families) == set(Metrics.__slots__)
    a = msgspec.msgpack.decode(msgspec.msgpack.encode(a), type=MetricsSnapshot)
    total = Metrics()
    a.plus(a).add_to(total)
    assert total.packets[(("direction", "in"), ("protocol", "mqtt"))] == 6
    assert total.connector_counts("c").refused == {"locked": 2}
    assert a.plus(a).mqtt_sessions == 2
    gone = a.counters_only()
    assert "connections" not in gone.families
    assert gone.mqtt_sessions == 0
    assert gone.families["packets"] == a.families["packets"]


class Inbox:
    """What the worker's client delivers, recorded."""

    def __init__(self) -> None:
        self.got: list[CommittedEvent] = []
        self.reloads: list[str | None] = []
        self.data_out = trio.Event()

    def events(self, events: Sequence[CommittedEvent]) -> None:
        self.got.extend(events)
        if any(e.type == "data_out" for e in events):
            self.data_out.set()

    async def registry_changed(self, connector_id: str | None) -> None:
        self.reloads.append(connector_id)

    def snapshot(self) -> MetricsSnapshot:
        return MetricsSnapshot("worker-1")


async def _serve_hub(
    hub: NodeHub, address: str, db: Path, *, task_status: trio.TaskStatus[None]
) -> None:
    async with open_store(db, synchronous="NORMAL", on_events=hub.publish_events) as store:
        listener = await listen_unix(address)
        await hub.serve(listener, store, lambda rec: None, task_status=task_status)


async def test_the_node_bus_end_to_end(tmp_path: Path) -> None:
    address = f"\0gateway-test-{os.getpid()}-{tmp_path.name}"
    db = tmp_path / "gateway.db"
    failures: list[tuple[Sequence[Op], GatewayError]] = []
    hub = NodeHub()
    async with trio.open_nursery() as nursery:
        owner = trio.CancelScope()

        async def owner_task(task_status: trio.TaskStatus[None]) -> None:
            with owner:
                await _serve_hub(hub, address, db, task_status=task_status)

        await nursery.start(owner_task)
        client = NodeClient(address, 1)
        store = RemoteStore(
            read_side("", tmp_path), client, on_failure=lambda ops, err: failures.append((ops, err))
        )
        inbox = Inbox()
        await nursery.start(client.run, inbox)
        # writes are committed by the owner; reads come straight from the file (WAL)
        await store.write([CreateConnector("c", "C", "", b"{}", 1, [Resource("data_out")])])
        (did,) = await store.write([CreateDevice("c", "d", "whitelisted", 2)])
        assert (await store.device("c", "d")).id == did  # type: ignore[union-attr]
        # many in flight at once, answered in any grouping
        tickets = [
            store.submit([DataIn("c", did, "d", [PointWrite("data_out", str(i), i)], META, i)])  # type: ignore[arg-type]
            for i in range(50)
        ]
        assert [await t.wait() for t in tickets] == [[1]] * 50
        # a refusal is the same class on this side
        with pytest.raises(AlreadyExists):
            await store.write([CreateDevice("c", "d", "whitelisted", 2)])
        # committed events of the worker types reach the worker's inbox
        # (the hub knows the worker: its Hello went before the submissions above)
        hub.publish_events([_ev(99, "data_out", payload=[])])
        with trio.fail_after(5):
            await inbox.data_out.wait()
        assert not [e for e in inbox.got if e.type == "data_in"]
        # the owner goes away: nothing waits, nothing is acknowledged
        owner.cancel()
        with trio.fail_after(5):
            await client.wait_connected(False)
        with pytest.raises(StoreFailed):
            await store.write([CreateDevice("c", "e", "whitelisted", 3)])
        store.submit([CreateDevice("c", "f", "whitelisted", 3)], detached=True)
        assert [type(err) for _ops, err in failures] == [StoreFailed]
        # a new owner: the client reconnects and re-reads the whole registry
        hub2 = NodeHub()
        await nursery.start(_serve_hub, hub2, address, db)
        with trio.fail_after(10):
            await client.wait_connected()
        await store.write([CreateDevice("c", "e", "whitelisted", 3)])
        assert None in inbox.reloads
        assert await store.device("c", "f") is None
        store.close()
        nursery.cancel_scope.cancel()
    assert hub_address("/a") != hub_address("/b")


async def test_a_connection_reset_is_a_lost_connection_on_both_sides(tmp_path: Path) -> None:
    """A peer killed with bytes it never read makes the kernel answer ECONNRESET instead of
    an end of stream: the worker's client reconnects and the owner's hub keeps serving (a
    killed store owner must not take a worker with it, nor a killed worker the owner)."""
    address = f"\0gateway-test-reset-{os.getpid()}-{tmp_path.name}"
    listener = await listen_unix(address)
    client = NodeClient(address, 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run, Inbox())
        # an "owner" that accepts, lets the Hello arrive unread, and closes: a reset
        first = await listener.accept()
        await trio.lowlevel.wait_readable(first.socket)
        await first.aclose()
        with trio.fail_after(5):
            again = await listener.accept()  # the client is still running: it reconnects
        await again.aclose()
        nursery.cancel_scope.cancel()
    await listener.aclose()

    hub = NodeHub()
    db = tmp_path / "gateway.db"
    async with trio.open_nursery() as nursery:
        await nursery.start(_serve_hub, hub, address + "-hub", db)
        # a "worker" that says Hello, leaves the hub's answer unread, and closes: a reset
        worker = await connect_unix(address + "-hub")
        out = bytearray()
        encode(Hello(7, 4242), out)
        await worker.send_all(bytes(out))
        await trio.lowlevel.wait_readable(worker.socket)
        await worker.aclose()
        # the hub still serves
        client = NodeClient(address + "-hub", 1)
        store = RemoteStore(read_side("", tmp_path), client, on_failure=lambda ops, err: None)
        await nursery.start(client.run, Inbox())
        await store.write([CreateConnector("c", "C", "", b"{}", 1, [Resource("data_out")])])
        store.close()
        nursery.cancel_scope.cancel()
