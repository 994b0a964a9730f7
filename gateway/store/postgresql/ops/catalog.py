"""Handlers of the catalogue ops on PostgreSQL (mirroring
``gateway/store/sqlite/ops/catalog.py``): connectors, resource definitions, content metadata
and admin tokens."""

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
from gateway.store.postgresql.ops._tx import Cursor, Tx

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

_OF_CONNECTOR = "(SELECT id FROM devices WHERE connector_id = %s)"


def _insert_resource(cur: Cursor, cid: str, r: Resource) -> None:
    cur.execute(
        "INSERT INTO resources (connector_id, alias, format, unit, allowed, settable, sync, "
        "initial) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
    cur = tx.cur
    row = tx.one(
        "INSERT INTO connectors VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
        "RETURNING id",
        (op.connector_id, op.name, op.description, op.settings, op.created, op.created),
    )
    if row is None:
        raise AlreadyExists(f"connector {op.connector_id!r} already exists")
    for r in op.resources:
        _insert_resource(cur, op.connector_id, r)


def update_connector(tx: Tx, op: UpdateConnector) -> None:
    tx.cur.execute(
        "UPDATE connectors SET name = %s, description = %s, settings = %s, updated = %s "
        "WHERE id = %s",
        (op.name, op.description, op.settings, op.updated, op.connector_id),
    )
    if tx.cur.rowcount == 0:
        raise NotFound(f"connector {op.connector_id!r} not found")


def delete_connector(tx: Tx, op: DeleteConnector) -> None:
    """Everything the connector holds.  Its ``event_seq`` row stays, so a connector created
    again under the same id continues the numbering and no cursor goes backwards."""
    cur, cid = tx.cur, op.connector_id
    tx.delta.pending_values -= tx.count(
        f"SELECT count(*) FROM state WHERE pending = 1 AND device_id IN {_OF_CONNECTOR}", (cid,)
    )
    cur.execute(f"DELETE FROM state WHERE device_id IN {_OF_CONNECTOR}", (cid,))
    cur.execute(f"DELETE FROM points WHERE device_id IN {_OF_CONNECTOR}", (cid,))
    cur.execute("DELETE FROM tags WHERE connector_id = %s", (cid,))
    tx.delta.devices -= cur.execute("DELETE FROM devices WHERE connector_id = %s", (cid,)).rowcount
    cur.execute("DELETE FROM resources WHERE connector_id = %s", (cid,))
    tx.delta.event_log_size -= cur.execute(
        "DELETE FROM events WHERE connector_id = %s", (cid,)
    ).rowcount
    cur.execute("DELETE FROM content WHERE connector_id = %s", (cid,))
    cur.execute("DELETE FROM connectors WHERE id = %s", (cid,))


def put_resource(tx: Tx, op: PutResource) -> None:
    cur, cid, resource = tx.cur, op.connector_id, op.resource
    exists = tx.one(
        "SELECT 1 FROM resources WHERE connector_id = %s AND alias = %s FOR UPDATE",
        (cid, resource.alias),
    )
    if op.create and exists:
        raise AlreadyExists(f"resource {resource.alias!r} already exists")
    if not op.create and not exists:
        raise NotFound(f"resource {resource.alias!r} not found")
    cur.execute(
        "DELETE FROM resources WHERE connector_id = %s AND alias = %s", (cid, resource.alias)
    )
    _insert_resource(cur, cid, resource)
    if op.create and resource.initial is not None and resource.settable:
        # Every existing identity gets the initial set value (docs/protocol.md §4.1).
        cur.execute(
            "INSERT INTO state (device_id, alias, set_value, set_ts, pending) "
            "SELECT id, %s, %s, %s, %s FROM devices WHERE connector_id = %s "
            "ON CONFLICT DO NOTHING",
            (resource.alias, resource.initial, op.timestamp, int(resource.sync), cid),
        )
        if resource.sync:
            tx.delta.pending_values += cur.rowcount


def delete_resource(tx: Tx, op: DeleteResource) -> None:
    cur, cid = tx.cur, op.connector_id
    cur.execute("DELETE FROM resources WHERE connector_id = %s AND alias = %s", (cid, op.alias))
    tx.delta.pending_values -= tx.count(
        "SELECT count(*) FROM state WHERE pending = 1 AND alias = %s "
        f"AND device_id IN {_OF_CONNECTOR}",
        (op.alias, cid),
    )
    cur.execute(
        f"DELETE FROM state WHERE alias = %s AND device_id IN {_OF_CONNECTOR}", (op.alias, cid)
    )


def _orphan(tx: Tx, sha: str) -> str | None:
    """``sha`` when no content item references that blob any more."""
    still = tx.one("SELECT 1 FROM content WHERE sha256 = %s LIMIT 1", (sha,))
    return None if still else sha


def put_content(tx: Tx, op: PutContent) -> str | None:
    old = tx.one(
        "SELECT sha256 FROM content WHERE connector_id = %s AND content_id = %s FOR UPDATE",
        (op.connector_id, op.content_id),
    )
    tx.cur.execute(
        "INSERT INTO content VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
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
        "DELETE FROM content WHERE connector_id = %s AND content_id = %s RETURNING sha256",
        (op.connector_id, op.content_id),
    )
    if row is None:
        raise NotFound(f"content {op.content_id!r} not found")
    return _orphan(tx, row[0])


def create_admin_token(tx: Tx, op: CreateAdminToken) -> None:
    tx.cur.execute(
        "INSERT INTO admin_tokens VALUES (%s, %s, %s, %s)",
        (op.token_id, op.name, op.token_hash, op.created),
    )


def revoke_admin_token(tx: Tx, op: RevokeAdminToken) -> None:
    tx.cur.execute("DELETE FROM admin_tokens WHERE id = %s", (op.token_id,))
    if tx.cur.rowcount == 0:
        raise NotFound(f"token {op.token_id!r} not found")
