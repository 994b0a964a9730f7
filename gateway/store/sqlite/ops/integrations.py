"""Handlers of the cloud-to-cloud integration ops (records, health history, job runs,
asset mapping).  Secret configuration values arrive encrypted; the store never sees them
in clear."""

from __future__ import annotations

import sqlite3

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
from gateway.store.sqlite.ops._tx import Tx

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


def _blobs(rec: IntegrationRecord) -> tuple[bytes, bytes, bytes]:
    return (
        msgspec.json.encode(rec.config),
        msgspec.json.encode(rec.secrets),
        msgspec.json.encode(rec.settings),
    )


def create_integration(tx: Tx, op: CreateIntegration) -> None:
    rec = op.record
    config, secrets, settings = _blobs(rec)
    try:
        tx.cur.execute(
            "INSERT INTO integrations (connector_id, name, document, doc_version, api_version, "
            "allow_http, config, secrets, settings, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.connector_id,
                rec.name,
                rec.document,
                rec.doc_version,
                rec.api_version,
                int(rec.allow_http),
                config,
                secrets,
                settings,
                rec.created,
                rec.updated,
            ),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"integration {rec.name!r} already exists") from None


def update_integration(tx: Tx, op: UpdateIntegration) -> None:
    rec = op.record
    config, secrets, settings = _blobs(rec)
    tx.cur.execute(
        "UPDATE integrations SET document = ?, doc_version = ?, api_version = ?, "
        "allow_http = ?, config = ?, secrets = ?, settings = ?, updated = ? "
        "WHERE connector_id = ? AND name = ?",
        (
            rec.document,
            rec.doc_version,
            rec.api_version,
            int(rec.allow_http),
            config,
            secrets,
            settings,
            rec.updated,
            rec.connector_id,
            rec.name,
        ),
    )
    if tx.cur.rowcount == 0:
        raise NotFound(f"integration {rec.name!r} not found")


def delete_integration(tx: Tx, op: DeleteIntegration) -> None:
    cur, key = tx.cur, (op.connector_id, op.name)
    cur.execute("DELETE FROM integrations WHERE connector_id = ? AND name = ?", key)
    if cur.rowcount == 0:
        raise NotFound(f"integration {op.name!r} not found")
    for table in ("integration_health", "integration_runs", "integration_assets"):
        cur.execute(f"DELETE FROM {table} WHERE connector_id = ? AND name = ?", key)


def record_health(tx: Tx, op: RecordHealth) -> bool:
    cur, cid, name = tx.cur, op.connector_id, op.name
    last = cur.execute(
        "SELECT healthy FROM integration_health WHERE connector_id = ? AND name = ? "
        "ORDER BY ts DESC LIMIT 1",
        (cid, name),
    ).fetchone()
    changed = last is None or bool(last[0]) != op.healthy
    cur.execute(
        "INSERT OR REPLACE INTO integration_health VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
    cur.execute(
        "DELETE FROM integration_health WHERE connector_id = ? AND name = ? AND ts <= ("
        "SELECT ts FROM integration_health WHERE connector_id = ? AND name = ? "
        "ORDER BY ts DESC LIMIT 1 OFFSET ?)",
        (cid, name, cid, name, op.history),
    )
    if changed:
        tx.emit(op.on_change)
    return changed


def start_run(tx: Tx, op: StartRun) -> int:
    cur = tx.cur
    cur.execute(
        "INSERT INTO integration_runs (connector_id, name, job, report) VALUES (?, ?, ?, ?)",
        (op.connector_id, op.name, op.job, msgspec.json.encode(op.report)),
    )
    run_id = int(cur.lastrowid or 0)
    cur.execute(
        "DELETE FROM integration_runs WHERE connector_id = ? AND name = ? AND job = ? AND "
        "id <= ? - ?",
        (op.connector_id, op.name, op.job, run_id, op.history),
    )
    return run_id


def finish_run(tx: Tx, op: FinishRun) -> None:
    tx.cur.execute(
        "UPDATE integration_runs SET report = ? WHERE id = ?",
        (msgspec.json.encode(op.report), op.run_id),
    )


def upsert_asset(tx: Tx, op: UpsertAsset) -> None:
    tx.cur.execute(
        "INSERT INTO integration_assets VALUES (?, ?, ?, ?, ?, ?, 0) "
        "ON CONFLICT (connector_id, name, asset_id) DO UPDATE SET identity = excluded.identity, "
        "last_seen = excluded.last_seen, vanished = 0",
        (op.connector_id, op.name, op.asset_id, op.identity, op.timestamp, op.timestamp),
    )


def mark_vanished(tx: Tx, op: MarkVanished) -> None:
    tx.cur.executemany(
        "UPDATE integration_assets SET vanished = 1 WHERE connector_id = ? AND "
        "name = ? AND asset_id = ?",
        [(op.connector_id, op.name, a) for a in op.asset_ids],
    )
