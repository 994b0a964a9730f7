"""Disk full (docs/reliability.md section 10, docs/decisions.md "Disk full"): writes are
refused with a clear error, nothing acknowledged is lost, the database stays intact, the
gateway starts on a full disk, and writes resume by themselves when space returns.

Each test mounts a small tmpfs of its own (``mount -t tmpfs``: root only, as CI runs; the
tests skip with the reason otherwise) and unmounts it when done.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from gateway.clock import now_us
from gateway.errors import StorageFull, debug_reason
from gateway.store.api import AppendEvent, EventMeta, EventQuery
from gateway.store.sqlite import open_store
from gateway.store.sqlite.writer import RESERVE_BYTES
from gateway.testing.probes.diskfull import (
    REFUSALS_WANTED,
    fill_filesystem,
    mount_unavailable,
    probe_disk_full,
    small_filesystem,
    summary,
)

SMALL_DISK_BYTES = 4 * 1024 * 1024
CID = "c1"


def _need_mount() -> None:
    reason = mount_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of this test's own, unmounted afterwards."""
    _need_mount()
    with contextlib.ExitStack() as stack:
        try:
            disk = stack.enter_context(small_filesystem(tmp_path / "disk", SMALL_DISK_BYTES))
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"mount -t tmpfs failed: {exc.stderr.decode(errors='replace')}")
        yield disk


def _event(n: int, payload_bytes: int = 0) -> AppendEvent:
    payload = {"n": n, "pad": "x" * payload_bytes}
    return AppendEvent(CID, "publish", None, EventMeta(), now_us(), payload)


async def _numbers(store: object) -> list[int]:
    events = await store.events(EventQuery(CID, limit=1000))  # type: ignore[attr-defined]
    return [int(e.payload["n"]) for e in events]


async def test_full_disk_refuses_whole_submissions_and_writes_resume(small_disk: Path) -> None:
    """Every ticket of a refused commit gets ``StorageFull`` (507, reason ``disk_full``),
    the writer keeps running and serves reads, and the first commit after space is freed
    succeeds — no restart.  A submission too big for the space left fails whole."""
    db = small_disk / "gateway.db"
    filler = small_disk / "filler"
    reserve = small_disk / "gateway.db-reserve"
    async with open_store(db) as store:
        for n in range(5):
            await store.write([_event(n)])
        assert reserve.stat().st_size == RESERVE_BYTES

        fill_filesystem(filler)
        tickets = [store.submit([_event(100 + n)]) for n in range(20)]
        for ticket in tickets:
            with pytest.raises(StorageFull) as refused:
                await ticket.wait()
        exc = refused.value
        assert (exc.http_status, exc.code, debug_reason(exc)) == (507, "storage_full", "disk_full")
        assert await _numbers(store) == list(range(5))  # reads go on

        filler.unlink()
        await store.write([_event(5)])  # the next commit after freeing space succeeds

        # one submission: a small op and one that cannot fit in the ~1 MB left
        st = os.statvfs(small_disk)
        filler.write_bytes(bytes(st.f_bavail * st.f_frsize - 1024 * 1024))
        with pytest.raises(StorageFull):
            await store.write([_event(90), _event(91, payload_bytes=3 * 1024 * 1024)])
        await store.write([_event(6)])  # the space left still takes a small one
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = [
            msgspec.json.decode(p)["n"] for (p,) in conn.execute("SELECT payload FROM events")
        ]
    conn.close()
    assert stored == list(range(7))


async def test_store_opens_on_a_full_disk_with_its_reserve(small_disk: Path) -> None:
    """A cleanly closed database has no ``-shm``, which SQLite must write before it can
    read: on a full disk the writer releases its space reserve, opens, serves reads and
    refuses writes; when space returns writes succeed and the reserve is made again."""
    db = small_disk / "gateway.db"
    filler = small_disk / "filler"
    reserve = small_disk / "gateway.db-reserve"
    async with open_store(db) as store:
        await store.write([_event(0)])
    assert not (small_disk / "gateway.db-shm").exists()
    assert reserve.exists()
    fill_filesystem(filler)

    async with open_store(db) as store:
        assert reserve.stat().st_size < RESERVE_BYTES  # spent on the -shm, the rest taken back
        assert await _numbers(store) == [0]
        with pytest.raises(StorageFull):
            await store.write([_event(1)])
        filler.unlink()
        await store.write([_event(1)])
        assert reserve.stat().st_size == RESERVE_BYTES

    # without a reserve (an older data directory) opening on a full disk is one clear error
    reserve.unlink()
    fill_filesystem(filler)
    with pytest.raises(StorageFull, match="cannot open the database"):
        async with open_store(db):
            pass


@pytest.mark.parametrize("workers", ["auto", "1"])
async def test_gateway_on_a_disk_that_fills(tmp_path: Path, workers: str) -> None:
    """The whole gateway over real sockets (gateway/testing/probes/diskfull.py), as the
    default node (the refusals cross its bus from the store owner to the workers) and as
    one process: HTTP 507 and MQTT without PUBACK with the debug reason ``disk_full``,
    management 507 ``storage_full``, uploads 507 with no file left, in a node the store
    owner killed and back on the full disk, two restarts on the full disk, resume without
    a restart, every acknowledged value stored, integrity ok, and a first start on a full
    disk ended by one line."""
    _need_mount()
    try:
        res = await probe_disk_full(tmp_path, workers)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"mount -t tmpfs failed: {exc.stderr.decode(errors='replace')}")
    report = "\n".join(summary(res))
    assert res.ok, report
    assert res.http_refused >= REFUSALS_WANTED, report
    assert res.mqtt_refused >= REFUSALS_WANTED, report
    assert res.http_acked > 0, report
    assert res.mqtt_acked > 0, report
    assert (res.http_reason, res.mqtt_reason) == ("disk_full", "disk_full"), report
    assert [r.shm_left for r in res.restarts][1:] == [False], report
    # tmpfs frees nothing by itself: no write fits and run.json waits for space
    no_write_fits = [(r.http_acked, r.mqtt_acked, r.run_json_written) for r in res.restarts]
    assert no_write_fits == [(0, 0, False)] * 2, report
    # the default is a node wherever there is more than one CPU; a node lost its owner
    assert res.node == (workers == "auto" and (os.cpu_count() or 1) > 1), report
    assert (res.owner_restart is not None) == res.node, report
    assert res.missing == 0, report
    assert (res.first_start_exit, res.no_reserve_exit) == (1, 1), report
    assert res.integrity == "ok", report
