"""SQLite store: one writer thread with group commit, reader connections.

Theory of operation
-------------------
SQLite allows one writer at a time, and the cost of a durable commit is dominated by the
fsync (``synchronous=FULL``), not by the rows in it.  So every write in the process goes
through one thread that owns the only write connection:

1. A Trio task calls :meth:`SqliteStore.submit` with a list of operations (one
   *submission*).  The submission goes into a thread-safe queue and the caller gets a
   :class:`_Ticket`; nothing blocks.
2. The writer thread takes the first submission from the queue, then drains whatever else
   is queued (up to ``max_batch``) — that is the group.  It opens one transaction, runs each
   submission inside its own ``SAVEPOINT`` (so a failing one rolls back alone), commits once,
   and only then
3. hands the whole group back to the Trio thread with a single
   ``TrioToken.run_sync_soon`` call, which resolves every ticket and publishes the committed
   events to the live fan-out (``on_events``).

While one commit is in its fsync, new submissions pile up in the queue and form the next
group, so batches grow with load by themselves and a QoS 1 PUBACK or an HTTP 204 sent after
``await ticket.wait()`` always refers to data that survives ``kill -9`` (and, with
``synchronous=FULL``, power loss).  If the commit itself fails, every ticket of the group
gets the error: nothing was acknowledged, nothing is lost silently.

Event sequence numbers are allocated by the writer (the only writer), per connector, in
commit order, so a reader polling ``seq > cursor`` never sees a later number before an
earlier one.  Numbers taken by a rolled-back submission (or a failed commit) are simply not
reused: that leaves a gap, and the sequence stays monotonic, so nothing has to be undone.

Readers use their own connections in autocommit mode: WAL lets them read the last committed
snapshot while the writer writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import sqlite_utils
import trio

from gateway.store.api import (
    AppendEvent,
    Call,
    CommittedEvent,
    DataIn,
    Op,
    PointWrite,
)
from gateway.store.sqlite.schema import migrate

__all__ = ["SqliteStore", "StoreStats", "open_store"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 4096  # submissions per commit; bounds the latency of the first one in a group
TRIM_INTERVAL_S = 30.0  # how often the writer applies event-log retention

_UPSERT_REPORTED = """
INSERT INTO state (device_id, alias, reported, reported_ts, set_value, set_ts, pending)
VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN ?3 END, CASE WHEN ?5 THEN ?4 END, 0)
ON CONFLICT (device_id, alias) DO UPDATE SET
    reported = excluded.reported,
    reported_ts = excluded.reported_ts,
    set_value = CASE WHEN ?5 THEN excluded.reported ELSE state.set_value END,
    set_ts = CASE WHEN ?5 THEN excluded.reported_ts ELSE state.set_ts END,
    pending = CASE WHEN ?5 THEN 0 ELSE state.pending END
WHERE state.reported_ts IS NULL OR excluded.reported_ts >= state.reported_ts
"""
_INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_STOP = object()


class StoreStats(msgspec.Struct):
    """Counters for ``/metrics`` (read without locking: monotonic ints, torn reads harmless)."""

    commits: int = 0
    submissions: int = 0
    failed_submissions: int = 0
    last_batch: int = 0
    max_batch: int = 0
    commit_seconds_total: float = 0.0
    events: int = 0


class _Ticket:
    """Resolved in the Trio thread by the writer's ``run_sync_soon`` callback."""

    __slots__ = ("_error", "_event", "_result")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._result: list[Any] = []
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> list[Any]:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._result


class _Submission:
    __slots__ = ("error", "events", "ops", "result", "ticket")

    def __init__(self, ops: Sequence[Op], ticket: _Ticket) -> None:
        self.ops = ops
        self.ticket = ticket
        self.result: list[Any] = []
        self.error: BaseException | None = None
        self.events: list[CommittedEvent] = []


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _has_replay(op: DataIn) -> bool:
    return any(p.replay_check for p in op.points)


def _payload_of(points: Sequence[PointWrite]) -> list[dict[str, Any]]:
    """Group points by timestamp, in arrival order, into the Device2 payload shape
    ``[{"timestamp": µs, "values": {alias: value}}]``.  A second value for an alias at the
    same timestamp starts a new entry instead of overwriting the first (§12 item 14)."""
    out: list[dict[str, Any]] = []
    by_ts: dict[int, dict[str, Any]] = {}
    for p in points:
        entry = by_ts.get(p.timestamp)
        if entry is None or p.alias in entry["values"]:
            entry = {"timestamp": p.timestamp, "values": {}}
            by_ts[p.timestamp] = entry
            out.append(entry)
        entry["values"][p.alias] = p.value
    return out


class SqliteStore:
    """The SQLite implementation of :class:`gateway.store.api.Store`.  Use
    :func:`open_store`; the writer thread lives exactly as long as that context."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        on_events: Callable[[list[CommittedEvent]], None] | None = None,
        max_batch: int = MAX_BATCH,
        event_retention_count: int = 1_000_000,
        event_retention_age_s: float = 30 * 86400.0,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.on_events = on_events
        self.max_batch = max_batch
        self.event_retention_count = event_retention_count
        self.event_retention_age_s = event_retention_age_s
        self.stats = StoreStats()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._seq: dict[str, int] = {}
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._wconn: sqlite3.Connection | None = None
        self._last_trim = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = OFF")
        migrate(sqlite_utils.Database(conn))
        self._wconn = conn

    async def start(self) -> None:
        """Open and migrate the database off the Trio thread, then start the writer."""
        await trio.to_thread.run_sync(self._open_writer)
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        """Stop after every queued submission has been committed and acknowledged."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            await trio.to_thread.run_sync(self._thread.join)
        # Let the last run_sync_soon resolutions run before the caller continues.
        await trio.lowlevel.checkpoint()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # -- write side --------------------------------------------------------------------

    def submit(self, ops: Sequence[Op]) -> _Ticket:
        if self._closed:
            raise RuntimeError("store is closed")
        ticket = _Ticket()
        self._queue.put(_Submission(ops, ticket))
        return ticket

    async def write(self, ops: Sequence[Op]) -> list[Any]:
        return await self.submit(ops).wait()

    async def call(self, fn: Callable[[sqlite3.Connection, Callable[[AppendEvent], None]], T]) -> T:
        result = await self.submit([Call(fn)]).wait()
        return result[0]  # type: ignore[no-any-return]

    def _run(self) -> None:
        """The writer thread: group, apply, commit, hand back.  Runs until _STOP."""
        assert self._wconn is not None
        conn = self._wconn
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            group: list[_Submission] = [first]  # type: ignore[list-item]
            while len(group) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)  # type: ignore[arg-type]
            self._commit_group(conn, group)
            if time.monotonic() - self._last_trim > TRIM_INTERVAL_S:
                self._trim(conn)
        conn.close()

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Submission]) -> None:
        t0 = time.perf_counter()
        failure: BaseException | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.cursor()
            for sub in group:
                self._apply_submission(conn, cur, sub)
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed: nobody is acknowledged
            log.exception("store commit of %d submissions failed", len(group))
            failure = exc
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        elapsed = time.perf_counter() - t0
        st = self.stats
        st.commits += 1
        st.submissions += len(group)
        st.last_batch = len(group)
        st.max_batch = max(st.max_batch, len(group))
        st.commit_seconds_total += elapsed
        events: list[CommittedEvent] = []
        for sub in group:
            if failure is not None:
                sub.error = failure
                sub.events = []
            elif sub.error is not None:
                st.failed_submissions += 1
            else:
                events.extend(sub.events)
        st.events += len(events)
        assert self._token is not None
        try:
            self._token.run_sync_soon(self._resolve, group, events)
        except trio.RunFinishedError:
            log.warning("trio run finished before %d submissions were acknowledged", len(group))

    def _resolve(self, group: list[_Submission], events: list[CommittedEvent]) -> None:
        """Trio thread: wake every waiter of the group, then fan the events out."""
        for sub in group:
            t = sub.ticket
            t._result = sub.result
            t._error = sub.error
            t._event.set()
        if events and self.on_events is not None:
            try:
                self.on_events(events)
            except Exception:
                log.exception("event fan-out failed")

    def _apply_submission(
        self, conn: sqlite3.Connection, cur: sqlite3.Cursor, sub: _Submission
    ) -> None:
        cur.execute("SAVEPOINT sub")
        try:
            ops = sub.ops
            i, n = 0, len(ops)
            while i < n:
                op = ops[i]
                i += 1
                if type(op) is DataIn:
                    # Coalesce a run of "now" writes of one device (the publishes of one
                    # MQTT read): one state upsert per alias and one data_in event whose
                    # payload keeps every write, instead of three statements per publish.
                    j = i
                    if not _has_replay(op):
                        while (
                            j < n
                            and type(ops[j]) is DataIn
                            and ops[j].device_id == op.device_id  # type: ignore[union-attr]
                            and not _has_replay(ops[j])  # type: ignore[arg-type]
                        ):
                            j += 1
                    if j == i:
                        sub.result.append(self._apply_data_in(cur, op, sub.events))
                        continue
                    run = ops[i - 1 : j]
                    merged = DataIn(
                        op.connector_id,
                        op.device_id,
                        op.identity,
                        [p for o in run for p in o.points],  # type: ignore[union-attr]
                        op.meta,
                        op.timestamp,
                    )
                    self._apply_data_in(cur, merged, sub.events)
                    sub.result.extend(len(o.points) for o in run)  # type: ignore[union-attr]
                    i = j
                elif type(op) is AppendEvent:
                    sub.result.append(self._append_event(cur, op, sub.events))
                elif type(op) is Call:

                    def emit(ev: AppendEvent, _events: list[CommittedEvent] = sub.events) -> None:
                        self._append_event(cur, ev, _events)

                    sub.result.append(op.fn(conn, emit))
                else:
                    raise TypeError(f"unknown store operation {type(op).__name__}")
            cur.execute("RELEASE sub")
        except Exception as exc:
            cur.execute("ROLLBACK TO sub")
            cur.execute("RELEASE sub")
            sub.error = exc
            sub.result = []
            sub.events = []

    def _next_seq(self, cur: sqlite3.Cursor, connector_id: str) -> int:
        seq = self._seq.get(connector_id)
        if seq is None:
            row = cur.execute(
                "SELECT max(seq) FROM events WHERE connector_id = ?", (connector_id,)
            ).fetchone()
            seq = int(row[0] or 0)
        seq += 1
        self._seq[connector_id] = seq
        return seq

    def _append_event(self, cur: sqlite3.Cursor, ev: AppendEvent, out: list[CommittedEvent]) -> int:
        seq = self._next_seq(cur, ev.connector_id)
        m = ev.meta
        payload = None if ev.payload is None else msgspec.json.encode(ev.payload)
        cur.execute(
            _INSERT_EVENT,
            (
                ev.connector_id,
                seq,
                ev.timestamp,
                ev.type,
                ev.identity,
                m.connection_id,
                m.ip,
                m.protocol,
                ev.reason,
                payload,
            ),
        )
        out.append(
            CommittedEvent(
                ev.connector_id,
                seq,
                ev.timestamp,
                ev.type,
                ev.identity,
                m.connection_id,
                m.ip,
                m.protocol,
                ev.reason,
                ev.payload,
            )
        )
        return seq

    def _apply_data_in(self, cur: sqlite3.Cursor, op: DataIn, out: list[CommittedEvent]) -> int:
        """State upsert (newest point per alias wins), replay filtering, lastseen, one
        ``data_in`` event.  Returns the number of points stored (replays excluded)."""
        points: Sequence[PointWrite] = op.points
        if any(p.replay_check for p in points):
            kept: list[PointWrite] = []
            for p in points:
                if p.replay_check:
                    vh = hashlib.blake2b(p.value.encode(), digest_size=8).digest()
                    cur.execute(
                        "INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?)",
                        (op.device_id, p.alias, p.timestamp, vh),
                    )
                    if cur.rowcount == 0:
                        continue
                kept.append(p)
            points = kept
        if not points:
            return 0
        newest: dict[str, PointWrite] = {}
        for p in points:
            if p.defined:
                q = newest.get(p.alias)
                if q is None or p.timestamp >= q.timestamp:
                    newest[p.alias] = p
        if newest:
            did = op.device_id
            cur.executemany(
                _UPSERT_REPORTED,
                [(did, p.alias, p.value, p.timestamp, p.settable) for p in newest.values()],
            )
        cur.execute(
            "UPDATE devices SET lastseen = ?, lastip = coalesce(?, lastip) WHERE id = ?",
            (op.timestamp, op.meta.ip, op.device_id),
        )
        self._append_event(
            cur,
            AppendEvent(
                op.connector_id, "data_in", op.identity, op.meta, op.timestamp, _payload_of(points)
            ),
            out,
        )
        return len(points)

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Event-log retention (age and count per connector), done by the writer so it
        never races a write."""
        self._last_trim = time.monotonic()
        cutoff = int((time.time() - self.event_retention_age_s) * 1_000_000)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
            for cid, seq in list(self._seq.items()):
                conn.execute(
                    "DELETE FROM events WHERE connector_id = ? AND seq <= ?",
                    (cid, seq - self.event_retention_count),
                )
            conn.execute("DELETE FROM points WHERE ts < ?", (cutoff,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("event-log trimming failed")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- read side ---------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._reader())

    async def read_async(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await trio.to_thread.run_sync(lambda: fn(self._reader()))


@contextlib.asynccontextmanager
async def open_store(
    path: Path,
    *,
    synchronous: str = "FULL",
    on_events: Callable[[list[CommittedEvent]], None] | None = None,
    **options: Any,
) -> AsyncIterator[SqliteStore]:
    """Open (creating and migrating if needed) the store at ``path`` for the duration of
    the block.  The writer thread is started inside and joined on exit, after every
    submission made inside the block has been committed and acknowledged."""
    store = SqliteStore(path, synchronous=synchronous, on_events=on_events, **options)
    await store.start()
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
