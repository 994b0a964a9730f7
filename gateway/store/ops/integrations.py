"""Handlers of the cloud-to-cloud integration ops (records, health history, job runs,
asset mapping), for both backends.  Secret configuration values arrive encrypted; the store
never sees them in clear."""

from __future__ import annotations

import msgspec

from gateway.errors import AlreadyExists, NotFound
from gateway.store.api import (
    CreateIntegration,
    DeleteIntegration,
    FinishRun,
    IntegrationRecord,
    MarkVanished,
    RecordHealth,
    StartRun,
    UpdateIntegration,
    UpsertAsset,
)
from gateway.store.ops._tx import ANY_OF_MAX, Tx

__all__ = [
    "create_integration",
    "delete_integration",
    "finish_run",
    "mark_vanished",
    "record_health",
    "start_run",
    "update_integration",
    "upsert_asset",
]


def _fields(rec: IntegrationRecord) -> tuple[object, ...]:
    """The columns a record sets when created or updated, in the statements' order (the
    configuration blobs as the services' JSON)."""
    return (
        rec.document,
        rec.doc_version,
        rec.api_version,
        int(rec.allow_http),
        msgspec.json.encode(rec.config),
        msgspec.json.encode(rec.secrets),
        msgspec.json.encode(rec.settings),
    )


def create_integration(tx: Tx, op: CreateIntegration) -> None:
    rec = op.record
    row = tx.one(
        "INSERT INTO integrations (connector_id, name, document, doc_version, api_version, "
        "allow_http, config, secrets, settings, created, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
        (rec.connector_id, rec.name, *_fields(rec), rec.created, rec.updated),
    )
    if row is None:
        raise AlreadyExists(f"integration {rec.name!r} already exists")


def update_integration(tx: Tx, op: UpdateIntegration) -> None:
    rec = op.record
    changed = tx.execute(
        "UPDATE integrations SET document = ?, doc_version = ?, api_version = ?, "
        "allow_http = ?, config = ?, secrets = ?, settings = ?, updated = ? "
        "WHERE connector_id = ? AND name = ?",
        (*_fields(rec), rec.updated, rec.connector_id, rec.name),
    )
    if changed == 0:
        raise NotFound(f"integration {rec.name!r} not found")


def delete_integration(tx: Tx, op: DeleteIntegration) -> None:
    key = (op.connector_id, op.name)
    if tx.execute("DELETE FROM integrations WHERE connector_id = ? AND name = ?", key) == 0:
        raise NotFound(f"integration {op.name!r} not found")
    for table in ("integration_health", "integration_runs", "integration_assets"):
        tx.execute(f"DELETE FROM {table} WHERE connector_id = ? AND name = ?", key)


def record_health(tx: Tx, op: RecordHealth) -> bool:
    cid, name = op.connector_id, op.name
    last = tx.one(
        "SELECT healthy FROM integration_health WHERE connector_id = ? AND name = ? "
        "ORDER BY ts DESC LIMIT 1",
        (cid, name),
    )
    changed = last is None or bool(last[0]) != op.healthy
    tx.execute(
        "INSERT INTO integration_health VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (connector_id, name, ts) DO UPDATE SET healthy = excluded.healthy, "
        "status_code = excluded.status_code, latency_ms = excluded.latency_ms, "
        "detail = excluded.detail, changed = excluded.changed",
        (
            cid,
            name,
            op.timestamp,
            int(op.healthy),
            op.status_code,
            op.latency_ms,
            op.detail,
            int(changed),
        ),
    )
    tx.execute(
        "DELETE FROM integration_health WHERE connector_id = ? AND name = ? AND ts <= ("
        "SELECT ts FROM integration_health WHERE connector_id = ? AND name = ? "
        "ORDER BY ts DESC LIMIT 1 OFFSET ?)",
        (cid, name, cid, name, op.history),
    )
    if changed:
        tx.emit(op.on_change)
    return changed


def start_run(tx: Tx, op: StartRun) -> int:
    row = tx.one(
        "INSERT INTO integration_runs (connector_id, name, job, report) VALUES (?, ?, ?, ?) "
        "RETURNING id",
        (op.connector_id, op.name, op.job, msgspec.json.encode(op.report)),
    )
    assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
    run_id = int(row[0])
    tx.execute(
        "DELETE FROM integration_runs WHERE connector_id = ? AND name = ? AND job = ? AND id <= ?",
        (op.connector_id, op.name, op.job, run_id - op.history),
    )
    return run_id


def finish_run(tx: Tx, op: FinishRun) -> None:
    tx.execute(
        "UPDATE integration_runs SET report = ? WHERE id = ?",
        (msgspec.json.encode(op.report), op.run_id),
    )


def upsert_asset(tx: Tx, op: UpsertAsset) -> None:
    tx.execute(
        "INSERT INTO integration_assets VALUES (?, ?, ?, ?, ?, ?, 0) "
        "ON CONFLICT (connector_id, name, asset_id) DO UPDATE SET identity = excluded.identity, "
        "last_seen = excluded.last_seen, vanished = 0",
        (op.connector_id, op.name, op.asset_id, op.identity, op.timestamp, op.timestamp),
    )


def mark_vanished(tx: Tx, op: MarkVanished) -> None:
    ids = list(op.asset_ids)
    for start in range(0, len(ids), ANY_OF_MAX):
        fragment, args = tx.any_of(ids[start : start + ANY_OF_MAX])
        tx.execute(
            f"UPDATE integration_assets SET vanished = 1 WHERE connector_id = ? AND name = ? "
            f"AND asset_id {fragment}",
            [op.connector_id, op.name, *args],
        )
