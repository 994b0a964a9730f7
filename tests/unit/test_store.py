"""The store seam and its SQLite writer: group commit, savepoint isolation (refusals and
failures roll back alone), detached submissions, event sequence, replays, counters, and ops
that survive msgspec encoding (what a store owner in another process receives).

Per-op handler and read tests are in ``test_store_ops.py``.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
import trio

from gateway import errors
from gateway.clock import now_us
from gateway.errors import AlreadyExists, GatewayError, NotFound, Refused, StoreFailed
from gateway.store.api import (
    ActivateDevice,
    AppendEvent,
    CommittedEvent,
    CreateAdminToken,
    CreateConnector,
    CreateDevice,
    CreateIntegration,
    DataIn,
    DeleteConnector,
    DeleteContent,
    DeleteDevice,
    DeleteIntegration,
    DeleteResource,
    DeviceConnected,
    DeviceDisconnected,
    DropConnections,
    EventMeta,
    EventQuery,
    FinishRun,
    ImportDevices,
    ImportRow,
    IntegrationRecord,
    MarkVanished,
    NodeBeat,
    Op,
    PointWrite,
    PutContent,
    PutResource,
    ReapNodes,
    RecordHealth,
    ResetOnline,
    Resource,
    RevokeAdminToken,
    SetValue,
    SetValues,
    StartRun,
    Tag,
    TagRef,
    UpdateConnector,
    UpdateDevice,
    UpdateIntegration,
    UpsertAsset,
)
from gateway.store.ops import HANDLERS
from gateway.store.sqlite import SqliteStore, open_store
from gateway.store.sqlite.migrations import MIGRATIONS

from .conftest import CheckCounters, db_counts

META = EventMeta(connection_id="c1", ip="127.0.0.1", protocol="murano:v1/mqtt")


async def _device(store: SqliteStore, identity: str = "d1") -> int:
    """Connector ``c`` (created once) with a settable ``data_out``, and one device."""
    if await store.device("c", identity) is None and not any(
        c.id == "c" for c in await store.connectors()
    ):
        await store.write(
            [CreateConnector("c", "c", "", b"{}", 1, [Resource("data_out", settable=True)])]
        )
    (did,) = await store.write([CreateDevice("c", identity, "provisioned", 1)])
    assert isinstance(did, int)
    return did


async def test_concurrent_writers_share_commits(
    store: SqliteStore, counters_exact: CheckCounters
) -> None:
    """Many Trio tasks writing at once: every write lands, and commits carry many writes."""
    did = await _device(store)
    tasks, per_task = 100, 20

    async def writer(t: int) -> None:
        for i in range(per_task):
            p = PointWrite("data_in", f"{t}:{i}", 1_000_000 + t * 1000 + i)
            await store.submit([DataIn("c", did, "d1", [p], META, 5)]).wait()

    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(writer, t)
    page1 = await store.events(EventQuery("c", 0, 1000))
    page2 = await store.events(EventQuery("c", page1[-1].seq, 1000))
    assert len(page1) + len(page2) == tasks * per_task
    assert await store.last_seq("c") == tasks * per_task
    st = await store.stats()
    assert st.events == st.event_log_size == tasks * per_task
    assert st.submissions >= tasks * per_task
    # Group commit really batches: far fewer commits than submissions, some big groups.
    assert st.commits < st.submissions / 4
    assert st.max_batch >= 10
    # State keeps the newest point per alias.
    (rep,) = await store.state(did)
    assert (rep.reported, rep.reported_ts) == (
        f"{tasks - 1}:{per_task - 1}",
        1_000_000 + (tasks - 1) * 1000 + per_task - 1,
    )
    await counters_exact(store)


async def test_refusal_rolls_back_alone(store: SqliteStore, counters_exact: CheckCounters) -> None:
    """A refused submission changes nothing, even what its earlier ops did; the others of
    the same commit land."""
    did = await _device(store)
    ok1 = store.submit([AppendEvent("c", "connect", "d1", META, 1)])
    bad = store.submit(
        [
            AppendEvent("c", "connect", "d1", META, 1),
            UpdateDevice("c", "d1", locked=True),
            CreateDevice("c", "d1", "whitelisted", 2),  # exists: AlreadyExists
        ]
    )
    ok2 = store.submit([AppendEvent("c", "disconnect", "d1", META, 2)])
    assert len(await ok1.wait()) == 1
    with pytest.raises(AlreadyExists, match="d1"):
        await bad.wait()
    await ok2.wait()
    events = await store.events(EventQuery("c"))
    assert [e.type for e in events] == ["connect", "disconnect"]
    assert events[0].seq < events[1].seq
    device = await store.device("c", "d1")
    assert device is not None
    assert device.id == did
    assert not device.locked
    st = await store.stats()
    assert st.failed_submissions == 1
    await counters_exact(store)


async def test_a_failure_that_is_no_refusal_becomes_store_failed(store: SqliteStore) -> None:
    """A handler bug (here: something that is no op) fails its submission alone, as
    ``StoreFailed`` (every ticket error belongs to the error tree)."""
    await _device(store)
    ok = store.submit([AppendEvent("c", "connect", "d1", META, 1)])
    bad = store.submit([AppendEvent("c", "connect", "d1", META, 1), object()])  # type: ignore[list-item]
    await ok.wait()
    with pytest.raises(StoreFailed, match="unknown store operation object"):
        await bad.wait()
    assert [e.type for e in await store.events(EventQuery("c"))] == ["connect"]


async def test_detached_failures_reach_on_failure(tmp_path: Path) -> None:
    """Nobody awaits a detached submission: its failure goes to ``on_failure`` with the
    ops and the error; an awaited one's does not."""
    failures: list[tuple[Sequence[Op], GatewayError]] = []
    async with open_store(
        tmp_path / "g.db", on_failure=lambda ops, e: failures.append((ops, e))
    ) as s:
        await s.write([CreateConnector("c", "c", "", b"{}", 1)])
        await s.write([CreateDevice("c", "d1", "whitelisted", 1)])
        dup = [CreateDevice("c", "d1", "whitelisted", 2)]
        with pytest.raises(AlreadyExists):
            await s.write(dup)
        assert failures == []
        ticket = s.submit(dup, detached=True)
        with pytest.raises(AlreadyExists):
            await ticket.wait()
        assert len(failures) == 1
        ops, error = failures[0]
        assert list(ops) == dup
        assert isinstance(error, AlreadyExists)


async def test_replayed_points_are_stored_once(store: SqliteStore) -> None:
    did = await _device(store)
    pts = [
        PointWrite("data_in", "a", 10, replay_check=True),
        PointWrite("data_in", "b", 10, replay_check=True),
    ]
    assert await store.write([DataIn("c", did, "d1", pts, META, 99)]) == [2]
    # exact replay: acknowledged, nothing stored, no event
    assert await store.write([DataIn("c", did, "d1", pts, META, 100)]) == [0]
    # same timestamp, different value: stored
    assert await store.write(
        [DataIn("c", did, "d1", [PointWrite("data_in", "c", 10, replay_check=True)], META, 101)]
    ) == [1]
    events = await store.events(EventQuery("c"))
    assert len(events) == 2
    # two values of one alias at one timestamp are two payload entries, in order
    assert events[0].payload == [
        {"timestamp": 10, "values": {"data_in": "a"}},
        {"timestamp": 10, "values": {"data_in": "b"}},
    ]


async def test_settable_write_clears_pending(
    store: SqliteStore, counters_exact: CheckCounters
) -> None:
    did = await _device(store)
    await store.write([SetValues("c", "d1", [SetValue("data_out", "go", True)], META, 50)])
    assert (await store.stats()).pending_values == 1
    assert [r.alias for r in await store.pending(did)] == ["data_out"]
    await store.write(
        [DataIn("c", did, "d1", [PointWrite("data_out", "went", 60, settable=True)], META, 60)]
    )
    (row,) = await store.state(did)
    assert (row.reported, row.set_value, row.pending) == ("went", "went", False)
    assert await store.pending(did) == []
    assert (await store.stats()).pending_values == 0
    await counters_exact(store)


async def test_older_settable_write_keeps_pending(
    store: SqliteStore, counters_exact: CheckCounters
) -> None:
    """A device write older than the stored one does not become the state, so it does not
    acknowledge the pending value either (docs/decisions.md)."""
    did = await _device(store)
    await store.write(
        [DataIn("c", did, "d1", [PointWrite("data_out", "new", 100, settable=True)], META, 100)]
    )
    await store.write([SetValues("c", "d1", [SetValue("data_out", "go", True)], META, 150)])
    await store.write(
        [DataIn("c", did, "d1", [PointWrite("data_out", "old", 50, settable=True)], META, 160)]
    )
    assert [r.set_value for r in await store.pending(did)] == ["go"]
    await counters_exact(store)


async def test_events_fan_out_after_commit(tmp_path: Path) -> None:
    seen: list[CommittedEvent] = []
    async with open_store(tmp_path / "g.db", on_events=seen.extend) as s:
        await s.write([AppendEvent("c", "connect", "d1", META, 1)])
        # the fan-out runs in the same run_sync_soon callback that resolved the ticket
        assert [e.type for e in seen] == ["connect"]
        assert seen[0].seq == 1


async def test_reopen_keeps_sequence_migrations_and_counters(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    async with open_store(path) as s:
        await _device(s)
        await s.write([AppendEvent("c", "connect", "d1", META, 1)])
        await s.write([SetValues("c", "d1", [SetValue("data_out", "x", True)], META, 2)])
    async with open_store(path) as s:
        seq = await s.write([AppendEvent("c", "connect", "d1", META, 3)])
        assert seq == [3]
        st = await s.stats()
        assert (st.devices, st.event_log_size, st.pending_values) == (1, 3, 1)
    conn = sqlite3.connect(path)
    versions = [v for (v,) in conn.execute("SELECT version FROM _migrations ORDER BY version")]
    conn.close()
    assert versions == [m.version for m in MIGRATIONS]
    assert versions == sorted(versions)


async def test_closed_store_refuses_submissions(tmp_path: Path) -> None:
    async with open_store(tmp_path / "g.db") as s:
        pass
    with pytest.raises(RuntimeError):
        s.submit([AppendEvent("c", "connect", None, META, 1)])


async def test_writes_of_one_read_coalesce(store: SqliteStore) -> None:
    """Several "now" writes of one device in one submission (one MQTT read): one data_in
    event keeps every write, state keeps the newest, each op still gets its result."""
    did = await _device(store)
    ops = [
        DataIn("c", did, "d1", [PointWrite("data_in", str(i), 100)], META, 100) for i in range(3)
    ]
    assert await store.write(ops) == [1, 1, 1]
    (event,) = await store.events(EventQuery("c"))
    assert [e["values"]["data_in"] for e in event.payload] == ["0", "1", "2"]
    assert [r.reported for r in await store.state(did)] == ["2"]


async def test_retention_trims_and_moves_the_counter(tmp_path: Path) -> None:
    """Retention by count per connector (applied by the writer after a group; here after
    every group) deletes the oldest events and moves the event-log gauge with it."""
    path = tmp_path / "g.db"
    async with open_store(path, event_retention_count=3, trim_interval_s=0.0) as s:
        for _ in range(8):  # recent events: only the count limit applies
            await s.write([AppendEvent("c", "publish", None, META, now_us())])
    # closed: the writer has run its last trim, so counters and file are final
    assert [seq for (seq,) in sqlite3.connect(path).execute("SELECT seq FROM events")] == [6, 7, 8]
    st = s.writer.stats
    assert (st.devices, st.event_log_size, st.pending_values) == db_counts(s)
    assert st.events == 8


# -- the seam's values cross process boundaries -------------------------------------------------

_RECORD = IntegrationRecord("c", "pumps", "doc", 1, "1.0", False, {"a": 1}, {"t": "x"}, {}, 1, 2)
_EVENT = AppendEvent("c", "publish", "d1", META, 7, [{"topic": "t", "payload": "p"}], "why")
EVERY_OP: list[Op] = [
    DataIn("c", 1, "d1", [PointWrite("a", "1", 2, settable=True, replay_check=True)], META, 3),
    _EVENT,
    DeviceConnected("c", 1, "d1", META, 4),
    DeviceDisconnected("c", 1, "d1", META, 5, "peer_closed"),
    ResetOnline(),
    DropConnections("w1.a-", 5),
    NodeBeat("node-a", "node-a.", 5),
    ReapNodes(1, 5),
    SetValues("c", "d1", [SetValue("a", "v", True)], META, 6),
    CreateDevice("c", "d1", "provisioned", 1, True, "token", "h", None, 9, [Tag("k", "v")]),
    ImportDevices("c", [ImportRow(2, "d2", "fp", [Tag("k", "v")])], 1, True, False, True),
    UpdateDevice("c", "d1", True, False, [Tag("k", "v")], [TagRef("k"), TagRef("k", "w")], True, 9),
    DeleteDevice("c", "d1", META, 8),
    ActivateDevice("c", "d1", "certificate", True, META, 9, None, "fp", "10.0.0.1"),
    CreateConnector("c", "n", "d", b'{"x": 1}', 1, [Resource("a", "number", allowed=[1, "2-3"])]),
    UpdateConnector("c", "n", "d", b"{}", 2),
    DeleteConnector("c"),
    PutResource("c", Resource("a", settable=True, initial="x"), True, 3),
    DeleteResource("c", "a"),
    PutContent("c", "f", "sha", 3, "text/plain", "d", {"k": "v"}, 4, _EVENT),
    DeleteContent("c", "f"),
    CreateAdminToken("id", "n", "h", 1),
    RevokeAdminToken("id"),
    CreateIntegration(_RECORD),
    UpdateIntegration(_RECORD),
    DeleteIntegration("c", "pumps"),
    RecordHealth("c", "pumps", 1, True, 200, 1.5, "ok", _EVENT, 10),
    StartRun("c", "pumps", "sync", {"id": 0, "job": "sync"}, 5),
    FinishRun(3, {"id": 3, "status": "ok"}),
    UpsertAsset("c", "pumps", "a1", "d1", 4),
    MarkVanished("c", "pumps", ["a1"]),
]


def test_every_op_type_is_covered_and_handled() -> None:
    types = set(get_args(Op))
    assert {type(op) for op in EVERY_OP} == types
    assert set(HANDLERS) == types


@pytest.mark.parametrize("codec", [msgspec.msgpack, msgspec.json], ids=["msgpack", "json"])
def test_every_op_round_trips_through_msgspec(codec: Any) -> None:
    """A batch of ops encodes and decodes to equal ops of the same types: the tag
    (``"op": <class name>``) picks the type."""
    decoded = codec.decode(codec.encode(EVERY_OP), type=list[Op])
    assert decoded == EVERY_OP
    assert [type(op) for op in decoded] == [type(op) for op in EVERY_OP]
    assert b'"op":"DataIn"' in msgspec.json.encode(EVERY_OP[0])


def _all_error_classes() -> list[type[GatewayError]]:
    return [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, GatewayError) and c.__module__ == errors.__name__
    ]


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.__name__)
def test_errors_cross_a_process_boundary(cls: type[GatewayError]) -> None:
    if cls is Refused:
        exc: GatewayError = Refused(
            "locked", reason="locked", http_status=403, connack=errors.ConnAckCode.NOT_AUTHORIZED
        )
    elif cls is errors.RateLimited:
        exc = errors.RateLimited("banned", reason="flapping", retry_after_s=2.5)
    else:
        exc = cls("what happened")
    info = msgspec.msgpack.decode(
        msgspec.msgpack.encode(errors.error_info(exc)), type=errors.ErrorInfo
    )
    back = errors.rebuild_error(info)
    assert type(back) is cls
    assert (back.message, back.code, back.http_status) == (exc.message, exc.code, exc.http_status)
    if isinstance(exc, Refused):
        assert isinstance(back, Refused)
        assert (back.reason, back.connack) == (exc.reason, exc.connack)
    if isinstance(exc, errors.RateLimited):
        assert isinstance(back, errors.RateLimited)
        assert back.retry_after_s == exc.retry_after_s


def test_an_error_class_defined_elsewhere_travels_as_its_base() -> None:
    class Gone(NotFound):
        pass

    back = errors.rebuild_error(errors.error_info(Gone("no such thing")))
    assert type(back) is NotFound
    assert back.message == "no such thing"


def test_sqlite_full_counts_as_storage_full(tmp_path: Path) -> None:
    """The writer's classifier on real SQLite errors: SQLITE_FULL (here from a page limit,
    what a full disk reports for a write) is a full disk; a constraint failure is not."""
    from gateway.store.sqlite.writer import storage_full

    db = tmp_path / "full.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("CREATE TABLE t (x TEXT UNIQUE)")
        conn.execute("INSERT INTO t VALUES ('a')")
        with pytest.raises(sqlite3.IntegrityError) as constraint:
            conn.execute("INSERT INTO t VALUES ('a')")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(sqlite3.OperationalError) as full:
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    finally:
        conn.close()
    assert storage_full(full.value, db)
    assert not storage_full(constraint.value, db)
    assert storage_full(OSError(errno.ENOSPC, "No space left on device"), db)
    assert not storage_full(OSError(errno.EACCES, "Permission denied"), db)
