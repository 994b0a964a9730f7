"""Handlers of the catalogue ops, for both backends: connectors, resource definitions,
content metadata and admin tokens."""

from __future__ import annotations

import msgspec

from gateway.errors import AlreadyExists, NotFound
from gateway.store.api import (
    CreateAdminToken,
    CreateConnector,
    DeleteConnector,
    DeleteContent,
    DeleteResource,
    PutContent,
    PutResource,
    Resource,
    RevokeAdminToken,
    UpdateConnector,
)
from gateway.store.ops._tx import Tx

__all__ = [
    "create_admin_token",
    "create_connector",
    "delete_connector",
    "delete_content",
    "delete_resource",
    "put_content",
    "put_resource",
    "revoke_admin_token",
    "update_connector",
]

_OF_CONNECTOR = "(SELECT id FROM devices WHERE connector_id = ?)"


def _insert_resource(tx: Tx, cid: str, r: Resource) -> None:
    tx.execute(
        "INSERT INTO resources (connector_id, alias, format, unit, allowed, settable, sync, "
        "initial) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            cid,
            r.alias,
            r.format,
            r.unit,
            msgspec.json.encode(r.allowed),
            int(r.settable),
            int(r.sync),
            r.initial,
        ),
    )


def create_connector(tx: Tx, op: CreateConnector) -> None:
    row = tx.one(
        "INSERT INTO connectors VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
        (op.connector_id, op.name, op.description, op.settings, op.created, op.created),
    )
    if row is None:
        raise AlreadyExists(f"connector {op.connector_id!r} already exists")
    for r in op.resources:
        _insert_resource(tx, op.connector_id, r)


def update_connector(tx: Tx, op: UpdateConnector) -> None:
    changed = tx.execute(
        "UPDATE connectors SET name = ?, description = ?, settings = ?, updated = ? WHERE id = ?",
        (op.name, op.description, op.settings, op.updated, op.connector_id),
    )
    if changed == 0:
        raise NotFound(f"connector {op.connector_id!r} not found")


def delete_connector(tx: Tx, op: DeleteConnector) -> None:
    """Everything the connector holds.  Its event numbering goes on where it stopped (the
    SQLite writer's counter in memory, PostgreSQL's ``event_seq`` row, which stays), so a
    connector created again under the same id sends no cursor backwards."""
    cid = op.connector_id
    tx.delta.pending_values -= tx.count(
        f"SELECT count(*) FROM state WHERE pending = 1 AND device_id IN {_OF_CONNECTOR}", (cid,)
    )
    tx.execute(f"DELETE FROM state WHERE device_id IN {_OF_CONNECTOR}", (cid,))
    tx.execute(f"DELETE FROM points WHERE device_id IN {_OF_CONNECTOR}", (cid,))
    tx.execute("DELETE FROM tags WHERE connector_id = ?", (cid,))
    tx.delta.devices -= tx.execute("DELETE FROM devices WHERE connector_id = ?", (cid,))
    tx.execute("DELETE FROM resources WHERE connector_id = ?", (cid,))
    tx.delta.event_log_size -= tx.execute("DELETE FROM events WHERE connector_id = ?", (cid,))
    tx.execute("DELETE FROM content WHERE connector_id = ?", (cid,))
    tx.execute("DELETE FROM imports WHERE connector_id = ?", (cid,))
    tx.execute("DELETE FROM connectors WHERE id = ?", (cid,))


def put_resource(tx: Tx, op: PutResource) -> None:
    cid, resource = op.connector_id, op.resource
    exists = tx.one(
        "SELECT 1 FROM resources WHERE connector_id = ? AND alias = ?" + tx.lock_rows,
        (cid, resource.alias),
    )
    if op.create and exists:
        raise AlreadyExists(f"resource {resource.alias!r} already exists")
    if not op.create and not exists:
        raise NotFound(f"resource {resource.alias!r} not found")
    tx.execute("DELETE FROM resources WHERE connector_id = ? AND alias = ?", (cid, resource.alias))
    _insert_resource(tx, cid, resource)
    if op.create and resource.initial is not None and resource.settable:
        # Every existing identity gets the initial set value (docs/protocol.md §4.1).
        added = tx.execute(
            "INSERT INTO state (device_id, alias, set_value, set_ts, pending) "
            "SELECT id, ?, ?, ?, ? FROM devices WHERE connector_id = ? "
            "ON CONFLICT DO NOTHING",
            (resource.alias, resource.initial, op.timestamp, int(resource.sync), cid),
        )
        if resource.sync:
            tx.delta.pending_values += added


def delete_resource(tx: Tx, op: DeleteResource) -> None:
    cid = op.connector_id
    tx.execute("DELETE FROM resources WHERE connector_id = ? AND alias = ?", (cid, op.alias))
    tx.delta.pending_values -= tx.count(
        "SELECT count(*) FROM state WHERE pending = 1 AND alias = ? "
        f"AND device_id IN {_OF_CONNECTOR}",
        (op.alias, cid),
    )
    tx.execute(
        f"DELETE FROM state WHERE alias = ? AND device_id IN {_OF_CONNECTOR}", (op.alias, cid)
    )


def _orphan(tx: Tx, sha: str) -> str | None:
    """``sha`` when no content item references that blob any more."""
    still = tx.one("SELECT 1 FROM content WHERE sha256 = ? LIMIT 1", (sha,))
    return None if still else sha


def put_content(tx: Tx, op: PutContent) -> str | None:
    old = tx.one(
        "SELECT sha256 FROM content WHERE connector_id = ? AND content_id = ?" + tx.lock_rows,
        (op.connector_id, op.content_id),
    )
    tx.execute(
        "INSERT INTO content VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (connector_id, content_id) DO UPDATE SET sha256 = excluded.sha256, "
        "size = excluded.size, content_type = excluded.content_type, "
        "description = excluded.description, tags = excluded.tags, updated = excluded.updated",
        (
            op.connector_id,
            op.content_id,
            op.sha256,
            op.size,
            op.content_type,
            op.description,
            msgspec.json.encode(op.tags),
            op.updated,
        ),
    )
    if op.event is not None:
        tx.emit(op.event)
    return _orphan(tx, old[0]) if old and old[0] != op.sha256 else None


def delete_content(tx: Tx, op: DeleteContent) -> str | None:
    row = tx.one(
        "DELETE FROM content WHERE connector_id = ? AND content_id = ? RETURNING sha256",
        (op.connector_id, op.content_id),
    )
    if row is None:
        raise NotFound(f"content {op.content_id!r} not found")
    return _orphan(tx, row[0])


def create_admin_token(tx: Tx, op: CreateAdminToken) -> None:
    tx.execute(
        "INSERT INTO admin_tokens VALUES (?, ?, ?, ?)",
        (op.token_id, op.name, op.token_hash, op.created),
    )


def revoke_admin_token(tx: Tx, op: RevokeAdminToken) -> None:
    if tx.execute("DELETE FROM admin_tokens WHERE id = ?", (op.token_id,)) == 0:
        raise NotFound(f"token {op.token_id!r} not found")
