"""The SQLite store: group commit, savepoint isolation, event sequence, replays."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from gateway.store.api import AppendEvent, Call, CommittedEvent, DataIn, EventMeta, PointWrite
from gateway.store.sqlite.schema import MIGRATIONS
from gateway.store.sqlite.writer import SqliteStore, open_store

META = EventMeta(connection_id="c1", ip="127.0.0.1", protocol="murano:v1/mqtt")


def _device(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> int:
    cur = conn.execute(
        "INSERT INTO devices (connector_id, identity, status, created) VALUES ('c', 'd1', "
        "'provisioned', 0)"
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


async def test_concurrent_writers_share_commits(store: SqliteStore) -> None:
    """Many Trio tasks writing at once: every write lands, and commits carry many writes."""
    did = await store.call(_device)
    tasks, per_task = 100, 20

    async def writer(t: int) -> None:
        for i in range(per_task):
            p = PointWrite("data_in", f"{t}:{i}", 1_000_000 + t * 1000 + i)
            await store.submit([DataIn("c", did, "d1", [p], META, 5)]).wait()

    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(writer, t)
    n = store.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])
    assert n == tasks * per_task
    st = store.stats
    assert st.submissions >= tasks * per_task
    # Group commit really batches: far fewer commits than submissions, some big groups.
    assert st.commits < st.submissions / 4
    assert st.max_batch >= 10
    # State keeps the newest point per alias.
    rep = store.read(
        lambda c: c.execute(
            "SELECT reported, reported_ts FROM state WHERE device_id = ?", (did,)
        ).fetchone()
    )
    assert rep == (f"{tasks - 1}:{per_task - 1}", 1_000_000 + (tasks - 1) * 1000 + per_task - 1)


async def test_failing_submission_rolls_back_alone(store: SqliteStore) -> None:
    """A submission that raises changes nothing; the others of the same commit land."""
    did = await store.call(_device)

    def boom(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
        emit(AppendEvent("c", "connect", "d1", META, 1))
        conn.execute("UPDATE devices SET locked = 1 WHERE id = ?", (did,))
        raise ValueError("nope")

    ok1 = store.submit([AppendEvent("c", "connect", "d1", META, 1)])
    bad = store.submit([Call(boom)])
    ok2 = store.submit([AppendEvent("c", "disconnect", "d1", META, 2)])
    assert len(await ok1.wait()) == 1
    with pytest.raises(ValueError, match="nope"):
        await bad.wait()
    await ok2.wait()
    rows = store.read(lambda c: c.execute("SELECT seq, type FROM events ORDER BY seq").fetchall())
    assert [r[1] for r in rows] == ["connect", "disconnect"]
    assert rows[0][0] < rows[1][0]
    locked = store.read(
        lambda c: c.execute("SELECT locked FROM devices WHERE id = ?", (did,)).fetchone()[0]
    )
    assert locked == 0


async def test_replayed_points_are_stored_once(store: SqliteStore) -> None:
    did = await store.call(_device)
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
    payloads = store.read(
        lambda c: c.execute(
            "SELECT payload FROM events WHERE type = 'data_in' ORDER BY seq"
        ).fetchall()
    )
    assert len(payloads) == 2
    # two values of one alias at one timestamp are two payload entries, in order
    import msgspec

    assert msgspec.json.decode(payloads[0][0]) == [
        {"timestamp": 10, "values": {"data_in": "a"}},
        {"timestamp": 10, "values": {"data_in": "b"}},
    ]


async def test_settable_write_clears_pending(store: SqliteStore) -> None:
    did = await store.call(_device)

    def set_value(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
        conn.execute(
            "INSERT INTO state (device_id, alias, set_value, set_ts, pending) "
            "VALUES (?, 'data_out', 'go', 50, 1)",
            (did,),
        )

    await store.call(set_value)
    await store.write(
        [DataIn("c", did, "d1", [PointWrite("data_out", "went", 60, settable=True)], META, 60)]
    )
    row = store.read(
        lambda c: c.execute(
            "SELECT reported, set_value, pending FROM state WHERE device_id = ?", (did,)
        ).fetchone()
    )
    assert row == ("went", "went", 0)


async def test_events_fan_out_after_commit(tmp_path: Path) -> None:
    seen: list[CommittedEvent] = []
    async with open_store(tmp_path / "g.db", on_events=seen.extend) as s:
        await s.write([AppendEvent("c", "connect", "d1", META, 1)])
        # the fan-out runs in the same run_sync_soon callback that resolved the ticket
        assert [e.type for e in seen] == ["connect"]
        assert seen[0].seq == 1


async def test_reopen_keeps_sequence_and_migrations(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    async with open_store(path) as s:
        await s.write([AppendEvent("c", "connect", "d1", META, 1)])
    async with open_store(path) as s:
        seq = await s.write([AppendEvent("c", "connect", "d1", META, 2)])
        assert seq == [2]
        versions = s.read(lambda c: c.execute("SELECT version FROM _migrations").fetchall())
        assert [v for (v,) in versions] == [v for v, _, _ in MIGRATIONS]


async def test_closed_store_refuses_submissions(tmp_path: Path) -> None:
    async with open_store(tmp_path / "g.db") as s:
        pass
    with pytest.raises(RuntimeError):
        s.submit([AppendEvent("c", "connect", None, META, 1)])


async def test_writes_of_one_read_coalesce(store: SqliteStore) -> None:
    """Several "now" writes of one device in one submission (one MQTT read): one data_in
    event keeps every write, state keeps the newest, each op still gets its result."""
    did = await store.call(_device)
    ops = [
        DataIn("c", did, "d1", [PointWrite("data_in", str(i), 100)], META, 100) for i in range(3)
    ]
    assert await store.write(ops) == [1, 1, 1]
    rows = store.read(lambda c: c.execute("SELECT payload FROM events").fetchall())
    import msgspec

    assert len(rows) == 1
    assert [e["values"]["data_in"] for e in msgspec.json.decode(rows[0][0])] == ["0", "1", "2"]
    rep = store.read(lambda c: c.execute("SELECT reported FROM state").fetchone())
    assert rep == ("2",)
