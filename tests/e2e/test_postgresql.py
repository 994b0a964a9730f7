"""The PostgreSQL store end to end: ``gateway serve --store postgresql://…`` serves a device,
and PostgreSQL restarting under writes loses nothing acknowledged (docs/architecture.md
principle 2): while it is down writes are refused, afterwards service resumes by itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import trio

from gateway.clock import now_us
from gateway.errors import BadRequest, StoreFailed
from gateway.store.api import AppendEvent, EventMeta, EventQuery
from gateway.store.postgresql import open_store
from gateway.testing.server import TestGateway, gateway_process

from ..conftest import PgDatabases


def _activate(http: httpx.Client, identity: str) -> str:
    r = http.post("/provision/activate", data={"id": identity})
    assert r.status_code == 200, r.text
    return r.text


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_postgresql_end_to_end(tmp_path: Path, pg: PgDatabases, workers: int) -> None:
    """A device activates and writes through a gateway on PostgreSQL (one process, and a
    node whose workers read from PostgreSQL and write through the store owner); the write
    is in the database when the 204 arrives, and reads come back from it.  The gateway
    survives a PostgreSQL restart: a write while it is down is refused (not acknowledged),
    the next one after it is back succeeds without restarting the gateway."""
    url = pg.new()
    data = tmp_path / "data"
    with gateway_process(data, extra=["--store", url], workers=workers) as (_proc, gw):
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{gw.ports['dev_http']}",
            headers={"Host": gw.devmode_fqdn()},
            timeout=30,
        )
        with http:
            _device_session(http, gw, url, pg)


def _device_session(http: httpx.Client, gw: TestGateway, url: str, pg: PgDatabases) -> None:
    """Activation, a write, reads; then a write while PostgreSQL is down, and after."""
    token = _activate(http, "pg-dev")
    auth = {"X-Exosite-CIK": token}
    r = http.post("/onep:v1/stack/alias", data={"data_in": "42"}, headers=auth)
    assert r.status_code == 204, r.text
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT identity, payload FROM events WHERE type = 'data_in'"
        ).fetchall()
    assert [(i, msgspec.json.decode(p)[0]["values"]) for i, p in rows] == [
        ("pg-dev", {"data_in": "42"})
    ]
    r = http.get("/onep:v1/stack/alias?data_in", headers=auth)
    assert (r.status_code, r.text) == (200, "data_in=42")
    r = httpx.get(f"{gw.api}/connectors", headers=gw.admin_headers)
    assert r.status_code == 200
    assert "demo" in r.text

    pg.cluster.stop()
    try:
        r = http.post("/onep:v1/stack/alias", data={"data_in": "43"}, headers=auth)
        assert r.status_code >= 500, r.text  # no acknowledgement without the database
    finally:
        pg.cluster.start()
    r = http.post("/onep:v1/stack/alias", data={"data_in": "44"}, headers=auth)
    assert r.status_code == 204, r.text
    r = http.get("/onep:v1/stack/alias?data_in", headers=auth)
    assert (r.status_code, r.text) == (200, "data_in=44")


async def test_restart_under_writes_loses_nothing_acknowledged(pg: PgDatabases) -> None:
    """Eight writers append events without pause while PostgreSQL is stopped and started
    again.  Every acknowledged event is in the log afterwards with the sequence number its
    ticket reported; writes made while the server is down fail with StoreFailed; once it is
    back, writes succeed again on the same store (the writer reconnected by itself), and
    the log's numbers are strictly increasing with no acknowledged one missing."""
    url = pg.new()
    acked: dict[int, int] = {}  # n -> seq
    refused = 0
    phase = "before"
    down_seen = trio.Event()
    up_again = trio.Event()
    counter = iter(range(1_000_000_000))
    stop_writing = trio.Event()
    goal, reached = 0, trio.Event()

    async def acks(count: int) -> None:
        """Until ``count`` writes in all have been acknowledged."""
        nonlocal goal, reached
        goal, reached = count, trio.Event()
        if len(acked) < count:
            with trio.fail_after(30):
                await reached.wait()

    async with open_store(url) as store:

        async def writer() -> None:
            nonlocal refused
            while not stop_writing.is_set():
                n = next(counter)
                op = AppendEvent("c", "publish", None, EventMeta(), now_us(), {"n": n})
                try:
                    (seq,) = await store.write([op])
                except StoreFailed:
                    refused += 1
                    if phase == "down":
                        down_seen.set()
                    continue
                assert isinstance(seq, int)
                acked[n] = seq
                if len(acked) >= goal:
                    reached.set()
                if phase == "up":
                    up_again.set()

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(writer)
            await acks(200)
            await trio.to_thread.run_sync(pg.cluster.stop)
            phase = "down"
            try:
                with trio.fail_after(30):
                    await down_seen.wait()
                before_restart = len(acked)
            finally:
                await trio.to_thread.run_sync(pg.cluster.start)
            phase = "up"
            with trio.fail_after(30):
                await up_again.wait()
            await acks(len(acked) + 200)
            stop_writing.set()
        events = []
        after = 0
        while True:
            page = await store.events(EventQuery("c", after=after, limit=1000))
            if not page:
                break
            events.extend(page)
            after = page[-1].seq

    assert refused > 0
    assert before_restart >= 200
    stored = {e.payload["n"]: e.seq for e in events}
    missing = [n for n in acked if stored.get(n) != acked[n]]
    assert not missing, f"{len(missing)} acknowledged events lost or renumbered: {missing[:5]}"
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))


async def test_two_nodes_number_one_log_in_commit_order(pg: PgDatabases) -> None:
    """Two stores on one database (two nodes' writers) append to the same connectors at
    once, each submission naming the connectors in its own order (a deadlock if the groups
    locked them as they came).  Every acknowledged event gets a number of its own; a
    poller reading ``seq > cursor`` while they write sees every event exactly once, in
    order — no number committed after the poller passed it (docs/decisions.md
    "PostgreSQL")."""
    url = pg.new()
    acked: list[tuple[str, int]] = []
    seen: dict[str, list[int]] = {"a": [], "b": []}
    done = trio.Event()

    async with open_store(url) as one, open_store(url) as two:

        async def writer(store: Any, first: str, k: int) -> None:
            second = "b" if first == "a" else "a"
            for i in range(60):
                ops = [
                    AppendEvent(c, "publish", None, EventMeta(), now_us(), {"k": k, "i": i})
                    for c in (first, second)
                ]
                seqs = await store.write(ops)
                acked.extend(zip((first, second), seqs, strict=True))

        async def poller(cid: str) -> None:
            after = 0
            while True:
                finished = done.is_set()  # read before the page: one more pass after the end
                page = await one.events(EventQuery(cid, after=after, limit=50))
                seen[cid].extend(e.seq for e in page)
                if page:
                    after = page[-1].seq
                elif finished:
                    return
                else:
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as pollers:
            pollers.start_soon(poller, "a")
            pollers.start_soon(poller, "b")
            async with trio.open_nursery() as writers:
                for k in range(4):
                    writers.start_soon(writer, one if k % 2 else two, "a" if k < 2 else "b", k)
            done.set()

    for cid in ("a", "b"):
        mine = sorted(seq for c, seq in acked if c == cid)
        assert mine == list(range(1, 241)), cid  # 4 writers x 60, unique, no gap
        assert seen[cid] == mine, cid  # the poller missed none and saw them in order


async def test_a_value_postgresql_cannot_hold_is_bad_input(pg: PgDatabases) -> None:
    """A NUL character in an event's text is refused as BadRequest (a client must not
    retry it as a store failure); the other submissions of the same commit land."""
    async with open_store(pg.new()) as store:
        ok = store.submit([AppendEvent("c", "publish", None, EventMeta(), 1, {"n": 1})])
        bad = store.submit([AppendEvent("c", "publish", "nul\x00here", EventMeta(), 2)])
        (seq,) = await ok.wait()
        with pytest.raises(BadRequest, match="cannot store"):
            await bad.wait()
        events = await store.events(EventQuery("c"))
        assert [(e.seq, e.payload) for e in events] == [(seq, {"n": 1})]
