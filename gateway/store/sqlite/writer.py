"""The SQLite write side: one writer thread with group commit.

Theory of operation
-------------------
SQLite allows one writer at a time, and the cost of a durable commit is dominated by the
fsync (``synchronous=FULL``), not by the rows in it.  So every write in the process goes
through one thread that owns the only write connection:

1. A Trio task calls :meth:`SqliteWriter.submit` with a list of ops (one *submission*).
   The submission goes into a thread-safe queue and the caller gets a :class:`_Ticket`;
   nothing blocks.
2. The writer thread takes the first submission from the queue, then drains whatever else
   is queued (up to ``max_batch``) — that is the group.  It opens one transaction, runs each
   submission inside its own ``SAVEPOINT`` through the op handlers
   (:func:`gateway.store.ops.apply_ops`), so a refused or failing one rolls back
   alone, commits once, and only then
3. hands the whole group back to the Trio thread with a single
   ``TrioToken.run_sync_soon`` call, which resolves every ticket, reports the failures of
   detached submissions to ``on_failure``, and passes the committed events to
   ``on_events``.

While one commit is in its fsync, new submissions pile up in the queue and form the next
group, so batches grow with load by themselves and a QoS 1 PUBACK or an HTTP 204 sent after
``await ticket.wait()`` always refers to data that survives ``kill -9`` (and, with
``synchronous=FULL``, power loss).  If the commit itself fails, every ticket of the group
gets the error: nothing was acknowledged, nothing is lost silently.

Errors: a handler's refusal (a :class:`~gateway.errors.GatewayError`) reaches the ticket as
it is; anything else (an ``sqlite3.Error``, a bug) is logged here with its traceback and
reaches the ticket as :class:`~gateway.errors.StoreFailed`, so every ticket error belongs to
the one error tree and can cross a process boundary.

Disk full: when a commit fails because the filesystem is full (``SQLITE_FULL``, or an
``SQLITE_IOERR`` while less than ``LOW_SPACE_BYTES`` are free: SQLite reports a shared-memory
or truncate failure that way), the group is rolled back and every ticket of it gets
:class:`~gateway.errors.StorageFull`; nothing of it was stored, and the WAL keeps the
database intact (a commit that did not finish writing its frames is ignored on the next
read).  The writer keeps running and tries every later group as usual: the next commit is
the only reliable test of whether one fits (free space as ``statvfs`` reports it misses
quotas and root's reserved blocks, and a commit may fit in WAL space already allocated),
and it is cheap — a refused commit never reaches its fsync.  So writes resume with the
first commit after space is freed, with no probe interval (docs/decisions.md "Disk full").
The transition is logged once each way, not once per refused group.

A database whose last connection closed cleanly has no ``-shm`` file, and SQLite cannot
open it without writing one (32 KiB): on a full disk even reads would fail.  So the writer
keeps a space reserve next to the database (``gateway.db-reserve``, ``RESERVE_BYTES`` of
zeros), releases it when opening fails for want of space and opens again, and makes it
anew when space is back.

Event sequence numbers are allocated by the writer (the only writer), per connector, in
commit order, so a reader polling ``seq > cursor`` never sees a later number before an
earlier one.  Numbers taken by a rolled-back submission (or a failed commit) are simply not
reused: that leaves a gap, and the sequence stays monotonic, so nothing has to be undone.

Counters (:class:`~gateway.store.api.StoreStats`) are seeded once at open and moved by each
submission's :class:`~gateway.store.ops.Delta` after its commit, so ``/metrics``
never counts rows.

Resource handling: :meth:`SqliteWriter.open` creates the connection (call it off the Trio
thread), :meth:`start` the thread, :meth:`aclose` stops the thread after every queued
submission has been committed and acknowledged, and closes the connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from gateway.errors import GatewayError, StorageFull, StoreFailed, is_disk_full
from gateway.metrics import BATCH_SIZE_BOUNDS, COMMIT_SECONDS_BOUNDS, bucket_index
from gateway.store.api import CommittedEvent, Op, OpResult, StoreStats
from gateway.store.ops import Delta, apply_ops, seed_counts
from gateway.store.sqlite.migrations import migrate
from gateway.store.sqlite.tx import SqliteTx, require_sqlite, trim_events

__all__ = [
    "LOW_SPACE_BYTES",
    "MAX_BATCH",
    "RESERVE_BYTES",
    "TRIM_INTERVAL_S",
    "SqliteWriter",
    "connect",
    "storage_full",
]

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # submissions per commit; bounds the latency of the first one in a group
TRIM_INTERVAL_S = 30.0  # how often the writer applies event-log retention
SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA", "OFF")
# An SQLITE_IOERR with less than this free on the database's filesystem counts as disk full.
LOW_SPACE_BYTES = 1024 * 1024
# The space reserve: what opening a cleanly closed WAL database on a full disk needs, one
# 32 KiB region of SQLite's shared-memory WAL index, with room for the filesystem's own
# allocations (ext4 with 1 KiB blocks needs more than the 32 KiB; docs/decisions.md).
RESERVE_BYTES = 256 * 1024
RESERVE_CHUNK = 64 * 1024
SQLITE_IOERR = 10  # primary result codes (sqlite3.h); extended codes keep them in the low byte
SQLITE_FULL = 13
_STOP = object()

OnEvents = Callable[[list[CommittedEvent]], None]
OnFailure = Callable[[Sequence[Op], GatewayError], None]


def storage_full(exc: BaseException, path: Path) -> bool:
    """``exc`` (from writing the database at ``path``) means the filesystem is full: an
    ``OSError`` ``ENOSPC``/``EDQUOT``, ``SQLITE_FULL``, or any ``SQLITE_IOERR`` while less
    than ``LOW_SPACE_BYTES`` are free there (SQLite maps ``ENOSPC`` to ``SQLITE_FULL`` only
    for plain writes; growing the ``-shm`` or truncating reports an I/O error)."""
    if is_disk_full(exc):
        return True
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    if not isinstance(code, int):
        return False
    if code & 0xFF == SQLITE_FULL:
        return True
    if code & 0xFF != SQLITE_IOERR:
        return False
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from the thread
    that owns it."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


class _Ticket:
    """Resolved in the Trio thread by the writer's ``run_sync_soon`` callback."""

    __slots__ = ("_error", "_event", "_result")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._result: list[OpResult] = []
        self._error: GatewayError | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> list[OpResult]:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._result


class _Submission:
    __slots__ = ("delta", "detached", "error", "events", "ops", "result", "ticket")

    def __init__(self, ops: Sequence[Op], ticket: _Ticket, detached: bool) -> None:
        self.ops = ops
        self.ticket = ticket
        self.detached = detached
        self.result: list[OpResult] = []
        self.error: GatewayError | None = None
        self.events: list[CommittedEvent] = []
        self.delta: Delta | None = None


class SqliteWriter:
    """The write connection and the thread that owns it (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        on_events: OnEvents | None = None,
        on_failure: OnFailure | None = None,
        max_batch: int = MAX_BATCH,
        event_retention_count: int = 1_000_000,
        event_retention_age_s: float = 30 * 86400.0,
        trim_interval_s: float = TRIM_INTERVAL_S,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.on_events = on_events
        self.on_failure = on_failure
        self.max_batch = max_batch
        self.event_retention_count = event_retention_count
        self.event_retention_age_s = event_retention_age_s
        self.trim_interval_s = trim_interval_s
        self.stats = StoreStats()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._seq: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._last_trim = time.monotonic()
        self.reserve_path = path.with_name(path.name + "-reserve")
        self._full_since: float | None = None  # monotonic time of the first refused commit
        self._full_refused = 0  # submissions refused since then

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Create, configure and migrate the database; seed the counters.  Blocking: run it
        in a worker thread.

        Raises :class:`~gateway.errors.StorageFull` when the disk is too full to open the
        database even after the space reserve was released (see the module docstring)."""
        require_sqlite()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._open_connection()
        except (sqlite3.Error, OSError) as exc:
            if not storage_full(exc, self.path):
                raise
            if not self._release_reserve():
                raise self._cannot_open(exc) from exc
            log.warning(
                "store: the disk holding %s is full; released the space reserve so that the "
                "database opens (writes are refused until space is freed)",
                self.path.parent,
            )
            try:
                conn = self._open_connection()
            except (sqlite3.Error, OSError) as again:
                if storage_full(again, self.path):
                    raise self._cannot_open(again) from again
                raise
        self._conn = conn
        self._keep_reserve()

    def _open_connection(self) -> sqlite3.Connection:
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = OFF")
            # Deleted and rewritten rows leave no old bytes in their page (an older
            # release's clear server key, a deleted device's token hash); FAST costs no I/O.
            conn.execute("PRAGMA secure_delete = FAST")
            migrate(conn)
            st = self.stats
            st.devices, st.event_log_size, st.pending_values = seed_counts(conn)
        except BaseException:
            conn.close()  # a migration cut short rolls back with it
            raise
        return conn

    def _cannot_open(self, exc: BaseException) -> StorageFull:
        return StorageFull(
            f"cannot open the database {self.path}: the disk holding it is full ({exc}); "
            "free some space there and start again"
        )

    def _release_reserve(self) -> bool:
        """Delete the space reserve; False when there was none."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _keep_reserve(self) -> None:
        """Grow the space reserve to ``RESERVE_BYTES``, or as far as the disk allows: on a
        full disk it takes what is left (a start that needed the reserve takes back the
        space the ``-shm`` did not use, so writes are refused at once) and grows again
        when space is back (the writer calls this then, and at each trim).  Random bytes,
        not zeros: a compressing filesystem would store zeros in no space at all.  Not
        fsynced: a reserve cut short by a crash is found short and grown."""
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            if not is_disk_full(exc):
                log.warning("store: cannot make the space reserve %s: %s", self.reserve_path, exc)
            return
        try:
            size = os.fstat(fd).st_size
            while size < RESERVE_BYTES:
                size += os.write(fd, os.urandom(min(RESERVE_CHUNK, RESERVE_BYTES - size)))
        except OSError as exc:
            if not is_disk_full(exc):
                log.warning("store: cannot grow the space reserve %s: %s", self.reserve_path, exc)
        finally:
            os.close(fd)

    def start(self) -> None:
        """Start the writer thread; call from the Trio thread after :meth:`open`."""
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
        elif self._conn is not None:
            self._conn.close()
        # Let the last run_sync_soon resolutions run before the caller continues.
        await trio.lowlevel.checkpoint()

    # -- submissions -------------------------------------------------------------------

    def submit(self, ops: Sequence[Op], *, detached: bool = False) -> _Ticket:
        if self._closed:
            raise RuntimeError("store is closed")
        ticket = _Ticket()
        self._queue.put(_Submission(ops, ticket, detached))
        return ticket

    def _run(self) -> None:
        """The writer thread: group, apply, commit, hand back.  Runs until _STOP."""
        assert self._conn is not None
        conn = self._conn
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Submission)
            group = [first]
            while len(group) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                assert isinstance(nxt, _Submission)
                group.append(nxt)
            self._commit_group(conn, group)
            if time.monotonic() - self._last_trim >= self.trim_interval_s:
                self._last_trim = time.monotonic()
                if self._full_since is None:  # deleting needs WAL space too
                    self._trim(conn)
                    self._keep_reserve()
        conn.close()

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Submission]) -> None:
        t0 = time.perf_counter()
        failure: StoreFailed | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.cursor()
            for sub in group:
                self._apply_submission(cur, sub)
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed: nobody is acknowledged
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if storage_full(exc, self.path):
                failure = self._refused_full(exc, len(group))
            else:
                log.exception("store commit of %d submissions failed", len(group))
                failure = StoreFailed(f"the commit failed: {exc!r}")
        else:
            if self._full_since is not None:
                self._space_back()
        elapsed = time.perf_counter() - t0
        st = self.stats
        st.commits += 1
        st.submissions += len(group)
        st.last_batch = len(group)
        st.max_batch = max(st.max_batch, len(group))
        st.commit_seconds_total += elapsed
        st.commit_seconds_counts[bucket_index(COMMIT_SECONDS_BOUNDS, elapsed)] += 1
        st.batch_size_counts[bucket_index(BATCH_SIZE_BOUNDS, len(group))] += 1
        events: list[CommittedEvent] = []
        total = Delta()
        for sub in group:
            if failure is not None:
                sub.error = failure
                sub.result = []
                sub.events = []
            if sub.error is not None:
                st.failed_submissions += 1
                continue
            events.extend(sub.events)
            if sub.delta is not None:
                total.add(sub.delta)
        st.events += len(events)
        st.devices += total.devices
        st.event_log_size += total.event_log_size
        st.pending_values += total.pending_values
        assert self._token is not None
        try:
            self._token.run_sync_soon(self._resolve, group, events)
        except trio.RunFinishedError:
            log.warning("trio run finished before %d submissions were acknowledged", len(group))

    def _refused_full(self, exc: Exception, submissions: int) -> StorageFull:
        """A group refused for want of space; logs the first of a run of them."""
        if self._full_since is None:
            self._full_since = time.monotonic()
            self._full_refused = 0
            log.error(
                "store: the disk holding %s is full (%s): writes are refused (HTTP 507, MQTT "
                "without PUBACK) until space is freed; reads go on",
                self.path.parent,
                exc,
            )
        self._full_refused += submissions
        return StorageFull("the gateway's disk is full: nothing was stored")

    def _space_back(self) -> None:
        assert self._full_since is not None
        log.warning(
            "store: space is back, writes resume; %d submissions were refused in %.1f s",
            self._full_refused,
            time.monotonic() - self._full_since,
        )
        self._full_since = None
        self._keep_reserve()

    def _apply_submission(self, cur: sqlite3.Cursor, sub: _Submission) -> None:
        cur.execute("SAVEPOINT sub")
        tx = SqliteTx(cur, self._next_seq)
        try:
            sub.result = apply_ops(tx, sub.ops)
            cur.execute("RELEASE sub")
        except Exception as exc:
            if not cur.connection.in_transaction or storage_full(exc, self.path):
                # SQLite rolled the whole transaction back (it may on SQLITE_FULL or an I/O
                # error), or the disk is full and the commit cannot succeed: fail the group
                raise
            cur.execute("ROLLBACK TO sub")
            cur.execute("RELEASE sub")
            if isinstance(exc, GatewayError):
                sub.error = exc
            else:
                log.error(
                    "store submission (%s) failed",
                    ", ".join(type(op).__name__ for op in sub.ops),
                    exc_info=exc,
                )
                sub.error = StoreFailed(f"{type(exc).__name__}: {exc}")
            sub.result = []
            return
        sub.events = tx.events
        sub.delta = tx.delta

    def _resolve(self, group: list[_Submission], events: list[CommittedEvent]) -> None:
        """Trio thread: wake every waiter of the group, report the failures nobody awaits,
        then fan the events out."""
        for sub in group:
            t = sub.ticket
            t._result = sub.result
            t._error = sub.error
            t._event.set()
            if sub.error is not None and sub.detached and self.on_failure is not None:
                try:
                    self.on_failure(sub.ops, sub.error)
                except Exception:
                    log.exception("store failure report failed")
        if events and self.on_events is not None:
            try:
                self.on_events(events)
            except Exception:
                log.exception("event fan-out failed")

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

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Event-log retention (age and count per connector), done by the writer so it
        never races a write."""
        cutoff = int((time.time() - self.event_retention_age_s) * 1_000_000)
        try:
            deleted = trim_events(
                conn,
                cutoff_us=cutoff,
                last_seqs=dict(self._seq),
                keep=self.event_retention_count,
            )
        except sqlite3.Error as exc:
            if storage_full(exc, self.path):
                log.warning("event-log trimming skipped: the disk is full (%s)", exc)
            else:
                log.exception("event-log trimming failed")
            return
        self.stats.event_log_size -= deleted
