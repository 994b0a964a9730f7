"""Handlers of the device-data ops: writes (the hot path), events, connection bookkeeping,
cloud-set values; and the event-log retention the writer runs between groups."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.errors import NotFound, Refused
from gateway.store.api import (
    AppendEvent,
    DataIn,
    DeviceConnected,
    DeviceDisconnected,
    DropConnections,
    EventMeta,
    NodeBeat,
    PointWrite,
    ReapNodes,
    ResetOnline,
    SetValues,
)
from gateway.store.sqlite.ops._tx import Tx

log = logging.getLogger(__name__)

__all__ = [
    "append_event",
    "data_in",
    "device_connected",
    "device_disconnected",
    "drop_connections",
    "node_beat",
    "reap_nodes",
    "reset_online",
    "seed_counts",
    "set_values",
    "trim_events",
]

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
_UPSERT_SET = (
    "INSERT INTO state (device_id, alias, set_value, set_ts, pending) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (device_id, alias) DO UPDATE SET set_value = excluded.set_value, "
    "set_ts = excluded.set_ts, pending = excluded.pending"
)


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


def _pending_among(tx: Tx, device_id: int, aliases: Iterable[str]) -> int:
    names = list(aliases)
    marks = ",".join("?" * len(names))
    return tx.count(
        f"SELECT count(*) FROM state WHERE device_id = ? AND pending = 1 AND alias IN ({marks})",
        [device_id, *names],
    )


def data_in(tx: Tx, op: DataIn) -> int:
    """State upsert (newest point per alias wins), replay filtering, lastseen, one
    ``data_in`` event.  Returns the number of points stored (replays excluded)."""
    cur = tx.cur
    # First, and in the same transaction: the device must still be allowed to write (lock
    # means now, docs/architecture.md "The node").  lastseen moves even for replays.
    cur.execute(
        "UPDATE devices SET lastseen = ?, lastip = coalesce(?, lastip) "
        "WHERE id = ? AND locked = 0 AND reprovision = 0",
        (op.timestamp, op.meta.ip, op.device_id),
    )
    if cur.rowcount == 0:
        raise _write_refused(tx, op.device_id)
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
        # A settable write may acknowledge a pending set value: count before and after
        # (two index probes, only on writes to settable aliases) to keep the gauge exact.
        settable = [a for a, p in newest.items() if p.settable]
        before = _pending_among(tx, did, settable) if settable else 0
        cur.executemany(
            _UPSERT_REPORTED,
            [(did, p.alias, p.value, p.timestamp, p.settable) for p in newest.values()],
        )
        if before:
            tx.delta.pending_values += _pending_among(tx, did, settable) - before
    tx.emit(
        AppendEvent(
            op.connector_id, "data_in", op.identity, op.meta, op.timestamp, _payload_of(points)
        )
    )
    return len(points)


def _write_refused(tx: Tx, device_id: int) -> Refused:
    row = tx.cur.execute("SELECT locked FROM devices WHERE id = ?", (device_id,)).fetchone()
    if row is None:
        return Refused("the device was deleted", reason="deleted", http_status=401)
    if row[0]:
        return Refused("device is locked", reason="locked", http_status=403)
    return Refused(
        "the device's credentials were revoked", reason="credentials_reset", http_status=401
    )


def append_event(tx: Tx, op: AppendEvent) -> int:
    return tx.emit(op)


def device_connected(tx: Tx, op: DeviceConnected) -> None:
    tx.cur.execute(
        "UPDATE devices SET online = 1, connection_id = ?, lastip = coalesce(?, lastip), "
        "lastseen = ? WHERE id = ?",
        (op.meta.connection_id, op.meta.ip, op.timestamp, op.device_id),
    )
    tx.emit(AppendEvent(op.connector_id, "connect", op.identity, op.meta, op.timestamp))


def device_disconnected(tx: Tx, op: DeviceDisconnected) -> None:
    # Only the device's current connection takes it offline: a newer connection of the
    # same identity (here or on another process) may already have been recorded.
    tx.cur.execute(
        "UPDATE devices SET lastseen = ?1, "
        "online = CASE WHEN connection_id = ?2 THEN 0 ELSE online END, "
        "connection_id = CASE WHEN connection_id = ?2 THEN NULL ELSE connection_id END "
        "WHERE id = ?3",
        (op.timestamp, op.meta.connection_id, op.device_id),
    )
    tx.emit(
        AppendEvent(
            op.connector_id, "disconnect", op.identity, op.meta, op.timestamp, reason=op.reason
        )
    )


def drop_connections(tx: Tx, op: DropConnections) -> int:
    # LIKE with the prefix escaped: connection ids are hex and dashes, but never trust that
    pattern = op.prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = tx.cur.execute(
        "SELECT id, connector_id, identity, connection_id FROM devices "
        "WHERE connection_id LIKE ? ESCAPE '\\'",
        (pattern,),
    ).fetchall()
    for did, cid, identity, conn_id in rows:
        tx.cur.execute(
            "UPDATE devices SET online = 0, connection_id = NULL, lastseen = ? WHERE id = ?",
            (op.timestamp, did),
        )
        tx.emit(
            AppendEvent(
                cid,
                "disconnect",
                identity,
                EventMeta(connection_id=conn_id),
                op.timestamp,
                reason=op.reason,
            )
        )
    return len(rows)


def node_beat(tx: Tx, op: NodeBeat) -> bool:
    tx.cur.execute(
        "UPDATE cluster_nodes SET seen = ?, prefix = ? WHERE name = ?",
        (op.timestamp, op.prefix, op.node),
    )
    if tx.cur.rowcount == 1:
        return True
    tx.cur.execute(
        "INSERT INTO cluster_nodes (name, prefix, seen) VALUES (?, ?, ?)",
        (op.node, op.prefix, op.timestamp),
    )
    return False


def reap_nodes(tx: Tx, op: ReapNodes) -> int:
    # DELETE … RETURNING: a second node reaping at the same moment waits on the row lock
    # and then finds it gone, so each lost node's devices are dropped once
    lost = tx.cur.execute(
        "DELETE FROM cluster_nodes WHERE seen < ? RETURNING name, prefix", (op.before,)
    ).fetchall()
    for name, prefix in sorted(lost):
        dropped = drop_connections(tx, DropConnections(prefix, op.timestamp, op.reason))
        log.log(
            logging.WARNING if dropped else logging.INFO,  # a node stopped on purpose has none
            "cluster node %s lost (no beat): %d devices taken offline",
            name,
            dropped,
        )
    return len(lost)


def reset_online(tx: Tx, op: ResetOnline) -> int:
    tx.cur.execute(
        "UPDATE devices SET online = 0, connection_id = NULL "
        "WHERE online = 1 OR connection_id IS NOT NULL"
    )
    return tx.cur.rowcount


def set_values(tx: Tx, op: SetValues) -> int:
    cur = tx.cur
    row = cur.execute(
        "SELECT id FROM devices WHERE connector_id = ? AND identity = ?",
        (op.connector_id, op.identity),
    ).fetchone()
    if row is None:
        raise NotFound(f"device {op.identity!r} not found")
    did = int(row[0])
    before = _pending_among(tx, did, (v.alias for v in op.values))
    ts = op.timestamp
    cur.executemany(_UPSERT_SET, [(did, v.alias, v.value, ts, int(v.pending)) for v in op.values])
    tx.delta.pending_values += sum(v.pending for v in op.values) - before
    texts = {v.alias: v.value for v in op.values}
    tx.emit(
        AppendEvent(
            op.connector_id,
            "data_out",
            op.identity,
            op.meta,
            ts,
            [{"timestamp": ts, "values": texts}],
        )
    )
    return did


def trim_events(
    conn: sqlite3.Connection, *, cutoff_us: int, last_seqs: Mapping[str, int], keep: int
) -> int:
    """Event-log retention (older than ``cutoff_us``, or more than ``keep`` per connector)
    and replay-check points older than the cutoff, in one transaction of the writer's
    connection.  Returns the number of events deleted."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute("DELETE FROM events WHERE ts < ?", (cutoff_us,)).rowcount
        for cid, seq in last_seqs.items():
            deleted += conn.execute(
                "DELETE FROM events WHERE connector_id = ? AND seq <= ?", (cid, seq - keep)
            ).rowcount
        conn.execute("DELETE FROM points WHERE ts < ?", (cutoff_us,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted


def seed_counts(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Devices, events kept, pending set values: the gauges' starting values, counted once
    when the store opens (off the Trio thread); commits move them from then on."""
    devices = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    pending = conn.execute("SELECT count(*) FROM state WHERE pending = 1").fetchone()[0]
    return int(devices), int(events), int(pending)
