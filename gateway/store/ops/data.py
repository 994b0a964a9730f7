"""Handlers of the device-data ops, for both backends: writes (the hot path), events,
connection bookkeeping, cloud-set values; and the gauges' starting counts.

The hot path (``data_in``, the coalesced now-writes of ``gateway/store/ops/__init__.py``,
``device_connected``/``device_disconnected``) is a handful of statements per op, each a
constant text (the PostgreSQL Tx finds its translation with one dictionary look-up).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
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
from gateway.store.ops._tx import Cursor, Tx

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
]

# A device write: newest reported value per alias; a settable alias's write is its set value
# too and acknowledges a pending one (docs/protocol.md §4.2, §4.3).  The last two values are
# the set value and its timestamp, NULL for a value that is not settable.
_UPSERT_REPORTED = """
INSERT INTO state (device_id, alias, reported, reported_ts, set_value, set_ts, pending)
VALUES (?, ?, ?, ?, ?, ?, 0)
ON CONFLICT (device_id, alias) DO UPDATE SET
    reported = excluded.reported,
    reported_ts = excluded.reported_ts,
    set_value = CASE WHEN excluded.set_ts IS NULL THEN state.set_value
                     ELSE excluded.set_value END,
    set_ts = coalesce(excluded.set_ts, state.set_ts),
    pending = CASE WHEN excluded.set_ts IS NULL THEN state.pending ELSE 0 END
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
    fragment, args = tx.any_of(list(aliases))  # a device's aliases: far fewer than the limit
    return tx.count(
        f"SELECT count(*) FROM state WHERE device_id = ? AND pending = 1 AND alias {fragment}",
        [device_id, *args],
    )


def data_in(tx: Tx, op: DataIn) -> int:
    """State upsert (newest point per alias wins), replay filtering, lastseen, one
    ``data_in`` event.  Returns the number of points stored (replays excluded)."""
    # First, and in the same transaction: the device must still be allowed to write (lock
    # means now, docs/architecture.md "The node").  lastseen moves even for replays.
    if not tx.execute(
        "UPDATE devices SET lastseen = ?, lastip = coalesce(?, lastip) "
        "WHERE id = ? AND locked = 0 AND reprovision = 0",
        (op.timestamp, op.meta.ip, op.device_id),
    ):
        raise _write_refused(tx, op.device_id)
    points: Sequence[PointWrite] = op.points
    if any(p.replay_check for p in points):
        kept: list[PointWrite] = []
        for p in points:
            if p.replay_check:
                vh = hashlib.blake2b(p.value.encode(), digest_size=8).digest()
                if not tx.execute(
                    "INSERT INTO points VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (op.device_id, p.alias, p.timestamp, vh),
                ):
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
        tx.executemany(
            _UPSERT_REPORTED,
            [
                (did, p.alias, p.value, p.timestamp, p.value, p.timestamp)
                if p.settable
                else (did, p.alias, p.value, p.timestamp, None, None)
                for p in newest.values()
            ],
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
    row = tx.one("SELECT locked FROM devices WHERE id = ?", (device_id,))
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
    tx.execute(
        "UPDATE devices SET online = 1, connection_id = ?, lastip = coalesce(?, lastip), "
        "lastseen = ? WHERE id = ?",
        (op.meta.connection_id, op.meta.ip, op.timestamp, op.device_id),
    )
    tx.emit(AppendEvent(op.connector_id, "connect", op.identity, op.meta, op.timestamp))


def device_disconnected(tx: Tx, op: DeviceDisconnected) -> None:
    # Only the device's current connection takes it offline: a newer connection of the
    # same identity (here or on another process or node) may already have been recorded.
    conn_id = op.meta.connection_id
    tx.execute(
        "UPDATE devices SET lastseen = ?, "
        "online = CASE WHEN connection_id = ? THEN 0 ELSE online END, "
        "connection_id = CASE WHEN connection_id = ? THEN NULL ELSE connection_id END "
        "WHERE id = ?",
        (op.timestamp, conn_id, conn_id, op.device_id),
    )
    tx.emit(
        AppendEvent(
            op.connector_id, "disconnect", op.identity, op.meta, op.timestamp, reason=op.reason
        )
    )


def drop_connections(tx: Tx, op: DropConnections) -> int:
    # LIKE with the prefix escaped: connection ids are hex and dashes, but never trust that.
    # "!" escapes, not a backslash, whose meaning in a PostgreSQL literal depends on
    # standard_conforming_strings.  In id order, so nodes dropping at once lock rows in one
    # order (PostgreSQL).
    pattern = op.prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
    rows = tx.all(
        "SELECT id, connector_id, identity, connection_id FROM devices "
        "WHERE connection_id LIKE ? ESCAPE '!' ORDER BY id",
        (pattern,),
    )
    for did, cid, identity, conn_id in rows:
        tx.execute(
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
    if tx.execute(
        "UPDATE cluster_nodes SET seen = ?, prefix = ? WHERE name = ?",
        (op.timestamp, op.prefix, op.node),
    ):
        return True
    tx.execute(
        "INSERT INTO cluster_nodes (name, prefix, seen) VALUES (?, ?, ?)",
        (op.node, op.prefix, op.timestamp),
    )
    return False


def reap_nodes(tx: Tx, op: ReapNodes) -> int:
    # DELETE … RETURNING: a second node reaping at the same moment waits on the row lock
    # and then finds it gone, so each lost node's devices are dropped once
    lost = tx.all("DELETE FROM cluster_nodes WHERE seen < ? RETURNING name, prefix", (op.before,))
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
    # every flag (a node's start drops its own, DropConnections); that is the caller's call.
    return tx.execute(
        "UPDATE devices SET online = 0, connection_id = NULL "
        "WHERE online = 1 OR connection_id IS NOT NULL"
    )


def set_values(tx: Tx, op: SetValues) -> int:
    row = tx.one(
        "SELECT id FROM devices WHERE connector_id = ? AND identity = ?",
        (op.connector_id, op.identity),
    )
    if row is None:
        raise NotFound(f"device {op.identity!r} not found")
    did = int(row[0])
    before = _pending_among(tx, did, (v.alias for v in op.values))
    ts = op.timestamp
    tx.executemany(_UPSERT_SET, [(did, v.alias, v.value, ts, int(v.pending)) for v in op.values])
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


def seed_counts(conn: Cursor) -> tuple[int, int, int]:
    """Devices, events kept, pending set values, counted in one snapshot, on a connection
    of either engine: the gauges' starting values, counted when the store opens (off the
    Trio thread; PostgreSQL's writer re-counts at every retention pass, since other nodes
    move the gauges too); commits move them from then on."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM events), "
        "(SELECT count(*) FROM state WHERE pending = 1)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])
