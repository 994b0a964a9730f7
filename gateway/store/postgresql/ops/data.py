"""Handlers of the device-data ops on PostgreSQL: writes (the hot path), events, connection
bookkeeping, cloud-set values; and the event-log retention the writer runs between groups.
The statements mirror ``gateway/store/sqlite/ops/data.py`` one for one."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

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
from gateway.store.postgresql.ops._tx import Tx
from gateway.store.sqlite.ops.data import _payload_of

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
VALUES (%(d)s, %(a)s, %(v)s, %(t)s, CASE WHEN %(s)s THEN %(v)s END,
        CASE WHEN %(s)s THEN %(t)s::bigint END, 0)
ON CONFLICT (device_id, alias) DO UPDATE SET
    reported = excluded.reported,
    reported_ts = excluded.reported_ts,
    set_value = CASE WHEN %(s)s THEN excluded.reported ELSE state.set_value END,
    set_ts = CASE WHEN %(s)s THEN excluded.reported_ts ELSE state.set_ts END,
    pending = CASE WHEN %(s)s THEN 0 ELSE state.pending END
WHERE state.reported_ts IS NULL OR excluded.reported_ts >= state.reported_ts
"""
_UPSERT_SET = (
    "INSERT INTO state (device_id, alias, set_value, set_ts, pending) "
    "VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (device_id, alias) DO UPDATE SET set_value = excluded.set_value, "
    "set_ts = excluded.set_ts, pending = excluded.pending"
)


def _pending_among(tx: Tx, device_id: int, aliases: Iterable[str]) -> int:
    return tx.count(
        "SELECT count(*) FROM state WHERE device_id = %s AND pending = 1 AND alias = ANY(%s)",
        (device_id, list(aliases)),
    )


def data_in(tx: Tx, op: DataIn) -> int:
    """State upsert (newest point per alias wins), replay filtering, lastseen, one
    ``data_in`` event.  Returns the number of points stored (replays excluded)."""
    cur = tx.cur
    # First, and in the same transaction: the device must still be allowed to write (lock
    # means now, docs/architecture.md "The node").  lastseen moves even for replays.
    cur.execute(
        "UPDATE devices SET lastseen = %s, lastip = coalesce(%s, lastip) "
        "WHERE id = %s AND locked = 0 AND reprovision = 0",
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
                    "INSERT INTO points VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
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
        settable = [a for a, p in newest.items() if p.settable]
        before = _pending_among(tx, did, settable) if settable else 0
        rows = [
            {"d": did, "a": p.alias, "v": p.value, "t": p.timestamp, "s": p.settable}
            for p in newest.values()
        ]
        if len(rows) == 1:
            cur.execute(_UPSERT_REPORTED, rows[0])
        else:
            cur.executemany(_UPSERT_REPORTED, rows)
        if before:
            tx.delta.pending_values += _pending_among(tx, did, settable) - before
    tx.emit(
        AppendEvent(
            op.connector_id, "data_in", op.identity, op.meta, op.timestamp, _payload_of(points)
        )
    )
    return len(points)


def _write_refused(tx: Tx, device_id: int) -> Refused:
    row = tx.one("SELECT locked FROM devices WHERE id = %s", (device_id,))
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
        "UPDATE devices SET online = 1, connection_id = %s, lastip = coalesce(%s, lastip), "
        "lastseen = %s WHERE id = %s",
        (op.meta.connection_id, op.meta.ip, op.timestamp, op.device_id),
    )
    tx.emit(AppendEvent(op.connector_id, "connect", op.identity, op.meta, op.timestamp))


def device_disconnected(tx: Tx, op: DeviceDisconnected) -> None:
    # Only the device's current connection takes it offline (docs/decisions.md).
    tx.cur.execute(
        "UPDATE devices SET lastseen = %(t)s, "
        "online = CASE WHEN connection_id = %(c)s THEN 0 ELSE online END, "
        "connection_id = CASE WHEN connection_id = %(c)s THEN NULL ELSE connection_id END "
        "WHERE id = %(d)s",
        {"t": op.timestamp, "c": op.meta.connection_id, "d": op.device_id},
    )
    tx.emit(
        AppendEvent(
            op.connector_id, "disconnect", op.identity, op.meta, op.timestamp, reason=op.reason
        )
    )


def drop_connections(tx: Tx, op: DropConnections) -> int:
    pattern = op.prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = tx.cur.execute(
        "SELECT id, connector_id, identity, connection_id FROM devices "
        "WHERE connection_id LIKE %s ESCAPE '\\' ORDER BY id",
        (pattern,),
    ).fetchall()
    for did, cid, identity, conn_id in rows:
        tx.cur.execute(
            "UPDATE devices SET online = 0, connection_id = NULL, lastseen = %s WHERE id = %s",
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
        "UPDATE cluster_nodes SET seen = %s, prefix = %s WHERE name = %s",
        (op.timestamp, op.prefix, op.node),
    )
    if tx.cur.rowcount == 1:
        return True
    tx.cur.execute(
        "INSERT INTO cluster_nodes (name, prefix, seen) VALUES (%s, %s, %s)",
        (op.node, op.prefix, op.timestamp),
    )
    return False


def reap_nodes(tx: Tx, op: ReapNodes) -> int:
    # DELETE … RETURNING: a second node reaping at the same moment waits on the row lock
    # and then finds it gone, so each lost node's devices are dropped once
    lost = tx.cur.execute(
        "DELETE FROM cluster_nodes WHERE seen < %s RETURNING name, prefix", (op.before,)
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
    # In a cluster another node's devices are online: only a whole-cluster start may clear
    # every flag.  The store leaves that to its caller, as the SQLite one does.
    tx.cur.execute(
        "UPDATE devices SET online = 0, connection_id = NULL "
        "WHERE online = 1 OR connection_id IS NOT NULL"
    )
    return tx.cur.rowcount


def set_values(tx: Tx, op: SetValues) -> int:
    cur = tx.cur
    row = tx.one(
        "SELECT id FROM devices WHERE connector_id = %s AND identity = %s",
        (op.connector_id, op.identity),
    )
    if row is None:
        raise NotFound(f"device {op.identity!r} not found")
    did = int(row[0])
    before = _pending_among(tx, did, (v.alias for v in op.values))
    ts = op.timestamp
    cur.executemany(_UPSERT_SET, [(did, v.alias, v.value, ts, int(v.pending)) for v in op.values])
    tx.delta.pending_values += sum(v.pending for v in op.values) - before
    texts: dict[str, Any] = {v.alias: v.value for v in op.values}
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
    conn: psycopg.Connection[tuple[Any, ...]],
    *,
    cutoff_us: int,
    last_seqs: Mapping[str, int],
    keep: int,
) -> int:
    """Event-log retention (older than ``cutoff_us``, or more than ``keep`` per connector)
    and replay-check points older than the cutoff, in one transaction.  Returns the number
    of events deleted."""
    with conn.transaction(), conn.cursor() as cur:
        deleted = cur.execute("DELETE FROM events WHERE ts < %s", (cutoff_us,)).rowcount
        for cid, seq in last_seqs.items():
            deleted += cur.execute(
                "DELETE FROM events WHERE connector_id = %s AND seq <= %s", (cid, seq - keep)
            ).rowcount
        cur.execute("DELETE FROM points WHERE ts < %s", (cutoff_us,))
    return deleted


def seed_counts(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[int, int, int]:
    """Devices, events kept, pending set values, counted in one snapshot: the gauges'
    starting values (and their periodic re-seed, since other nodes move them too)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM events), "
        "(SELECT count(*) FROM state WHERE pending = 1)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])
