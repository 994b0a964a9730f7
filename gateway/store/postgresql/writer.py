"""The PostgreSQL write side: one writer thread per node with group commit.

Theory of operation
-------------------
The same pipeline as the SQLite writer (``gateway/store/sqlite/writer.py``), on a psycopg 3
*sync* connection owned by one thread (docs/decisions.md "PostgreSQL": no asyncio bridge):

1. :meth:`PgWriter.submit` queues a submission and returns a :class:`_Ticket`; nothing
   blocks the Trio thread.
2. The writer thread takes the first submission and drains whatever else is queued (up to
   ``max_batch``): the group.  One transaction, each submission atomic (a refused or
   failing one rolls back alone: "Savepoints only when needed" below), one ``COMMIT`` — a
   commit's round trip and WAL flush are shared by the whole group, so batches grow with
   load by themselves.
3. Only after ``COMMIT`` returns is the group handed back to the Trio thread with one
   ``TrioToken.run_sync_soon``: tickets resolve, then ``on_events`` gets the committed events.

Event sequence numbers across nodes
-----------------------------------
Several nodes append to one connector's log, so numbers come from the database: the
connector's ``event_seq`` row.  The first time a group needs a connector's number it locks
that row (``INSERT … ON CONFLICT DO UPDATE … RETURNING``), numbers the group's events from it
in memory, writes the last number back just before ``COMMIT``, and holds the row lock until
the commit.  Hence, per connector:

* numbers are unique and increase in *commit order*: a second node's transaction cannot read
  the row until the first has committed (or rolled back: then the numbers are reused, since
  nothing with them was ever visible);
* a cursor reader never skips an event: PostgreSQL makes a transaction visible before it
  releases its locks, so when a reader can see seq N+1, the transaction that held N has
  already finished; there is no "N committed later than N+1" to miss.  (An ``IDENTITY`` or
  ``SEQUENCE`` would not do: they hand out numbers outside the transaction, and a reader
  polling ``seq > cursor`` would step over a smaller number committed late.)

The price is that nodes writing the same connector serialise on its row for the length of a
group's transaction.  To keep two groups from locking two connectors in opposite orders,
the group locks every connector its ops name, sorted, before applying anything; a deadlock
that still happens (an op touching a connector it does not name, such as
``DropConnections``) aborts the transaction, and the group is retried once from scratch —
nothing was acknowledged.  A submission rolled back to its savepoint gives its numbers back
(the in-memory counters are restored with it).

Savepoints only when needed
---------------------------
A group is first run with no savepoints at all.  Almost every submission succeeds, and a
savepoint costs two round trips (``SAVEPOINT``, ``RELEASE``) and a subtransaction; past 64
subtransactions that wrote, a transaction's snapshot overflows and every other session
reading the database slows down (``pg_subtrans`` lookups).  If any submission fails (a
refusal, a bad value), the whole transaction is rolled back and the group is run again with
a ``SAVEPOINT`` per submission, so the failing one rolls back alone and the others commit:
the result is the same as with savepoints from the start, and the rare failure pays twice.

PostgreSQL going away
---------------------
Any error of the connection itself fails the whole group with
:class:`~gateway.errors.StoreFailed` (no acknowledgement), the connection is dropped, and the
next group connects again (an immediate refusal while the server is down: every submission
in between fails fast, none waits).  A commit whose outcome is unknown (the server went away
during ``COMMIT``) is reported as failed: it may have been stored, but it was never
acknowledged, which is the contract (docs/architecture.md principle 2).

Counters (:class:`~gateway.store.api.StoreStats`) move with this node's commits and are
re-seeded from the database at every retention pass (other nodes move the gauges too), in
this thread, never at scrape time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import trio

from gateway.errors import BadRequest, GatewayError, StoreFailed
from gateway.store.api import CommittedEvent, Op, OpResult, StoreStats
from gateway.store.ops import Delta, apply_ops, seed_counts
from gateway.store.postgresql.migrations import migrate
from gateway.store.postgresql.tx import Cursor, PgTx, trim_events
from gateway.store.sqlite.writer import OnEvents, OnFailure

__all__ = ["CONNECT_TIMEOUT_S", "MAX_BATCH", "PgWriter", "connect"]

log = logging.getLogger(__name__)

MAX_BATCH = 4096
TRIM_INTERVAL_S = 30.0
CONNECT_TIMEOUT_S = 5
_RETRY_ON = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_STOP = object()

Conn = psycopg.Connection[tuple[Any, ...]]


def connect(url: str) -> Conn:
    """An autocommit connection (transactions are explicit) for the thread that owns it."""
    return psycopg.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="gateway"
    )


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

    def reset(self) -> None:
        self.result, self.error, self.events, self.delta = [], None, [], None


class _GroupAborted(Exception):
    """The connection failed inside a submission: the whole group's transaction is gone."""


class _NeedSavepoints(Exception):
    """A submission failed in a group run without savepoints: run it again with them."""


class PgWriter:
    """The write connection and the thread that owns it (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        on_events: OnEvents | None = None,
        on_failure: OnFailure | None = None,
        max_batch: int = MAX_BATCH,
        event_retention_count: int = 1_000_000,
        event_retention_age_s: float = 30 * 86400.0,
        trim_interval_s: float = TRIM_INTERVAL_S,
    ) -> None:
        self.url = url
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
        self._conn: Conn | None = None
        self._seq: dict[str, int] = {}  # this group's locked counters: connector -> last seq
        self._closed = False
        self._down = False  # the last group failed for want of the server
        self._last_trim = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Connect, migrate, seed the counters.  Blocking: run it in a worker thread.
        Raises ``psycopg.OperationalError`` when the server cannot be reached."""
        conn = connect(self.url)
        try:
            migrate(conn)
            self._seed(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _seed(self, conn: Conn) -> None:
        st = self.stats
        st.devices, st.event_log_size, st.pending_values = seed_counts(conn)

    def start(self) -> None:
        """Start the writer thread; call from the Trio thread after :meth:`open`."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name="store-writer-pg", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        """Stop after every queued submission has been committed (or failed) and answered."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            await trio.to_thread.run_sync(self._thread.join)
        elif self._conn is not None:
            self._conn.close()
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
            self._commit_group(group)
            if time.monotonic() - self._last_trim >= self.trim_interval_s:
                self._trim()
        self._drop_connection()

    def _connection(self) -> Conn:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._drop_connection()
            conn = connect(self.url)
            self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _commit_group(self, group: list[_Submission]) -> None:
        t0 = time.perf_counter()
        failure: StoreFailed | None = None
        savepoints = False  # first without: see "Savepoints only when needed" above
        deadlock_retries = 1
        while True:
            failure = None
            try:
                self._transaction(group, savepoints)
                break
            except _NeedSavepoints:
                self._rollback()
                for sub in group:
                    sub.reset()
                savepoints = True
            except _RETRY_ON as exc:
                self._rollback()
                for sub in group:
                    sub.reset()
                failure = StoreFailed(f"the commit failed: {exc!r}")
                if not deadlock_retries:
                    log.error("store: group of %d failed after a retry: %s", len(group), exc)
                    break
                deadlock_retries -= 1
                log.info("store: group of %d retried after %s", len(group), exc)
            except Exception as exc:  # the connection or the commit failed: nobody is acked
                cause = exc.__cause__ if isinstance(exc, _GroupAborted) else exc
                if not self._down:  # once per outage, not once per refused group
                    log.error("store commit of %d submissions failed: %r", len(group), cause)
                self._down = isinstance(cause, psycopg.OperationalError)
                failure = StoreFailed(f"the commit failed: {cause!r}")
                self._rollback()
                break
        if failure is None and self._down:
            self._down = False
            log.warning("store: PostgreSQL is back, commits resume")
        elapsed = time.perf_counter() - t0
        st = self.stats
        st.commits += 1
        st.submissions += len(group)
        st.last_batch = len(group)
        st.max_batch = max(st.max_batch, len(group))
        st.commit_seconds_total += elapsed
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

    def _transaction(self, group: list[_Submission], savepoints: bool) -> None:
        conn = self._connection()
        self._seq = {}
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            self._lock_counters(cur, group)
            for sub in group:
                if savepoints:
                    self._apply_submission(cur, sub)
                else:
                    self._apply_plain(cur, sub)
            if self._seq:
                cur.executemany(
                    "UPDATE event_seq SET seq = %s WHERE connector_id = %s",
                    [(seq, cid) for cid, seq in self._seq.items()],
                )
            cur.execute("COMMIT")

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None or conn.broken:
            self._drop_connection()
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop_connection()

    def _lock_counters(self, cur: Cursor, group: list[_Submission]) -> None:
        """Lock the ``event_seq`` rows of every connector the group's ops name, in one
        sorted pass (one lock order for every node: see the module docstring)."""
        names = sorted(
            {cid for sub in group for op in sub.ops if (cid := getattr(op, "connector_id", None))}
        )
        if names:
            for cid, seq in cur.execute(
                "SELECT connector_id, seq FROM event_seq WHERE connector_id = ANY(%s) "
                "ORDER BY connector_id FOR UPDATE",
                (names,),
            ).fetchall():
                self._seq[cid] = int(seq)

    def _next_seq(self, cur: Cursor, connector_id: str) -> int:
        seq = self._seq.get(connector_id)
        if seq is None:
            # A connector not locked yet (created in this group, or not named by its op):
            # create or lock its row now.
            row = cur.execute(
                "INSERT INTO event_seq VALUES (%s, 0) ON CONFLICT (connector_id) "
                "DO UPDATE SET seq = event_seq.seq RETURNING seq",
                (connector_id,),
            ).fetchone()
            assert row is not None
            seq = int(row[0])
        seq += 1
        self._seq[connector_id] = seq
        return seq

    def _apply_plain(self, cur: Cursor, sub: _Submission) -> None:
        """A submission without a savepoint: any failure voids the whole transaction, and
        the group is run again with savepoints (:class:`_NeedSavepoints`)."""
        tx = PgTx(cur, self._next_seq)
        try:
            sub.result = apply_ops(tx, sub.ops)
        except Exception as exc:
            if isinstance(exc, _RETRY_ON):
                raise
            if isinstance(exc, psycopg.OperationalError) or cur.connection.broken:
                raise _GroupAborted() from exc
            raise _NeedSavepoints() from exc
        sub.events = tx.events
        sub.delta = tx.delta

    def _apply_submission(self, cur: Cursor, sub: _Submission) -> None:
        saved = dict(self._seq)
        tx = PgTx(cur, self._next_seq)
        try:
            cur.execute("SAVEPOINT sub")
            sub.result = apply_ops(tx, sub.ops)
            cur.execute("RELEASE sub")
        except Exception as exc:
            if isinstance(exc, _RETRY_ON):
                raise  # the whole transaction is void: the group is tried again
            if isinstance(exc, psycopg.OperationalError) or cur.connection.broken:
                raise _GroupAborted() from exc
            try:
                cur.execute("ROLLBACK TO sub")
                cur.execute("RELEASE sub")
            except psycopg.Error as again:
                raise _GroupAborted() from again
            self._seq = saved
            if isinstance(exc, GatewayError):
                sub.error = exc
            elif isinstance(exc, psycopg.errors.DataError):
                # A value PostgreSQL cannot hold (a NUL in text, a number past bigint):
                # bad input, refused with nothing changed, not a store failure a client
                # would retry forever.
                sub.error = BadRequest(f"a value the database cannot store: {exc}")
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

    def _trim(self) -> None:
        """Event-log retention and the gauges' re-seed, between groups."""
        self._last_trim = time.monotonic()
        cutoff = int((time.time() - self.event_retention_age_s) * 1_000_000)
        try:
            conn = self._connection()
            rows = conn.execute("SELECT connector_id, seq FROM event_seq").fetchall()
            last = {str(cid): int(seq) for cid, seq in rows}
            trim_events(conn, cutoff_us=cutoff, last_seqs=last, keep=self.event_retention_count)
            self._seed(conn)
        except psycopg.Error as exc:
            log.warning("event-log trimming failed: %r", exc)
            if self._conn is not None and self._conn.broken:
                self._drop_connection()
