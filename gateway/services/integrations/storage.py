"""Tables of the integrations feature and the SQL that reads and writes them.

Registered as migration 100 at import (versions 100-199 belong to this feature), so the
composition root must import this package before the store opens.  Every function here
takes a ``sqlite3.Connection`` and is run by the service through ``store.call`` (writes, in
the writer thread's savepoint) or ``store.read`` / ``read_async``; nothing else touches
these tables.  Secret configuration values arrive here already encrypted.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from gateway.errors import AlreadyExists, NotFound
from gateway.services.integrations.models import HealthCheck, RunReport
from gateway.store.sqlite import schema

__all__ = [
    "HEALTH_HISTORY",
    "RUN_HISTORY",
    "AssetRow",
    "StoredIntegration",
    "delete_integration",
    "finish_run",
    "get_integration",
    "insert_integration",
    "list_integrations",
    "load_assets",
    "mark_vanished",
    "read_health",
    "read_runs",
    "record_health",
    "start_run",
    "update_integration",
    "upsert_asset",
]

HEALTH_HISTORY = 500  # health probes kept per integration
RUN_HISTORY = 200  # job reports kept per integration and job

SQL = """
CREATE TABLE integrations (
    connector_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    document     TEXT NOT NULL,              -- the OpenAPI 2 document as uploaded
    doc_version  INTEGER NOT NULL,           -- 1, 2, ... per upload
    api_version  TEXT NOT NULL,              -- info.version
    allow_http   INTEGER NOT NULL DEFAULT 0, -- the development flag admitting http
    config       BLOB NOT NULL,              -- JSON: non-secret configuration values
    secrets      BLOB NOT NULL,              -- JSON: name -> AES-GCM ciphertext (crypto.py)
    settings     BLOB NOT NULL,              -- JSON: IntegrationSettings
    created      INTEGER NOT NULL,           -- µs
    updated      INTEGER NOT NULL,
    PRIMARY KEY (connector_id, name)
) WITHOUT ROWID;
CREATE TABLE integration_health (
    connector_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    healthy      INTEGER NOT NULL,
    status_code  INTEGER,
    latency_ms   REAL NOT NULL,
    detail       TEXT NOT NULL,
    changed      INTEGER NOT NULL,
    PRIMARY KEY (connector_id, name, ts)
) WITHOUT ROWID;
CREATE TABLE integration_runs (
    id           INTEGER PRIMARY KEY,
    connector_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    job          TEXT NOT NULL,
    report       BLOB NOT NULL               -- JSON: RunReport
);
CREATE INDEX integration_runs_by_job ON integration_runs (connector_id, name, job, id);
CREATE TABLE integration_assets (
    connector_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    asset_id     TEXT NOT NULL,
    identity     TEXT NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    vanished     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (connector_id, name, asset_id)
) WITHOUT ROWID;
"""

schema.register(100, "integrations", SQL)


class StoredIntegration(msgspec.Struct, frozen=True):
    connector_id: str
    name: str
    document: str
    doc_version: int
    api_version: str
    allow_http: bool
    config: dict[str, Any]
    secrets: dict[str, str]  # ciphertexts
    settings: dict[str, Any]
    created: int
    updated: int


class AssetRow(msgspec.Struct, frozen=True):
    asset_id: str
    identity: str
    vanished: bool


_COLS = (
    "connector_id, name, document, doc_version, api_version, allow_http, config, secrets, "
    "settings, created, updated"
)


def _row(r: tuple[Any, ...]) -> StoredIntegration:
    return StoredIntegration(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        bool(r[5]),
        msgspec.json.decode(r[6]),
        msgspec.json.decode(r[7]),
        msgspec.json.decode(r[8]),
        r[9],
        r[10],
    )


def insert_integration(conn: sqlite3.Connection, rec: StoredIntegration) -> None:
    try:
        conn.execute(
            f"INSERT INTO integrations ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.connector_id,
                rec.name,
                rec.document,
                rec.doc_version,
                rec.api_version,
                int(rec.allow_http),
                msgspec.json.encode(rec.config),
                msgspec.json.encode(rec.secrets),
                msgspec.json.encode(rec.settings),
                rec.created,
                rec.updated,
            ),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"integration {rec.name!r} already exists") from None


def update_integration(conn: sqlite3.Connection, rec: StoredIntegration) -> None:
    cur = conn.execute(
        "UPDATE integrations SET document = ?, doc_version = ?, api_version = ?, "
        "allow_http = ?, config = ?, secrets = ?, settings = ?, updated = ? "
        "WHERE connector_id = ? AND name = ?",
        (
            rec.document,
            rec.doc_version,
            rec.api_version,
            int(rec.allow_http),
            msgspec.json.encode(rec.config),
            msgspec.json.encode(rec.secrets),
            msgspec.json.encode(rec.settings),
            rec.updated,
            rec.connector_id,
            rec.name,
        ),
    )
    if cur.rowcount == 0:
        raise NotFound(f"integration {rec.name!r} not found")


def get_integration(conn: sqlite3.Connection, cid: str, name: str) -> StoredIntegration:
    r = conn.execute(
        f"SELECT {_COLS} FROM integrations WHERE connector_id = ? AND name = ?", (cid, name)
    ).fetchone()
    if r is None:
        raise NotFound(f"integration {name!r} not found")
    return _row(r)


def list_integrations(conn: sqlite3.Connection, cid: str | None = None) -> list[StoredIntegration]:
    if cid is None:
        rows = conn.execute(f"SELECT {_COLS} FROM integrations ORDER BY connector_id, name")
    else:
        rows = conn.execute(
            f"SELECT {_COLS} FROM integrations WHERE connector_id = ? ORDER BY name", (cid,)
        )
    return [_row(r) for r in rows.fetchall()]


def delete_integration(conn: sqlite3.Connection, cid: str, name: str) -> None:
    """Remove the integration and its history.  Devices it created stay (they are the
    connector's devices now); only the asset mapping goes."""
    cur = conn.execute("DELETE FROM integrations WHERE connector_id = ? AND name = ?", (cid, name))
    if cur.rowcount == 0:
        raise NotFound(f"integration {name!r} not found")
    for table in ("integration_health", "integration_runs", "integration_assets"):
        conn.execute(f"DELETE FROM {table} WHERE connector_id = ? AND name = ?", (cid, name))


def record_health(conn: sqlite3.Connection, cid: str, name: str, check: HealthCheck) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO integration_health VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            cid,
            name,
            check.timestamp,
            int(check.healthy),
            check.status_code,
            check.latency_ms,
            check.detail,
            int(check.changed),
        ),
    )
    conn.execute(
        "DELETE FROM integration_health WHERE connector_id = ? AND name = ? AND ts <= ("
        "SELECT ts FROM integration_health WHERE connector_id = ? AND name = ? "
        "ORDER BY ts DESC LIMIT 1 OFFSET ?)",
        (cid, name, cid, name, HEALTH_HISTORY),
    )


def read_health(
    conn: sqlite3.Connection, cid: str, name: str, *, limit: int = 50, changes_only: bool = False
) -> list[HealthCheck]:
    """Newest first."""
    extra = " AND changed = 1" if changes_only else ""
    rows = conn.execute(
        "SELECT ts, healthy, status_code, latency_ms, detail, changed FROM integration_health "
        f"WHERE connector_id = ? AND name = ?{extra} ORDER BY ts DESC LIMIT ?",
        (cid, name, limit),
    ).fetchall()
    return [HealthCheck(r[0], bool(r[1]), r[2], r[3], r[4], bool(r[5])) for r in rows]


def start_run(conn: sqlite3.Connection, cid: str, name: str, report: RunReport) -> int:
    cur = conn.execute(
        "INSERT INTO integration_runs (connector_id, name, job, report) VALUES (?, ?, ?, ?)",
        (cid, name, report.job, msgspec.json.encode(report)),
    )
    run_id = int(cur.lastrowid or 0)
    conn.execute(
        "DELETE FROM integration_runs WHERE connector_id = ? AND name = ? AND job = ? AND "
        "id <= ? - ?",
        (cid, name, report.job, run_id, RUN_HISTORY),
    )
    return run_id


def finish_run(conn: sqlite3.Connection, report: RunReport) -> None:
    conn.execute(
        "UPDATE integration_runs SET report = ? WHERE id = ?",
        (msgspec.json.encode(report), report.id),
    )


def read_runs(
    conn: sqlite3.Connection, cid: str, name: str, job: str | None = None, *, limit: int = 20
) -> list[RunReport]:
    """Newest first."""
    if job is None:
        rows = conn.execute(
            "SELECT report FROM integration_runs WHERE connector_id = ? AND "
            "name = ? ORDER BY id DESC LIMIT ?",
            (cid, name, limit),
        )
    else:
        rows = conn.execute(
            "SELECT report FROM integration_runs WHERE connector_id = ? AND "
            "name = ? AND job = ? ORDER BY id DESC LIMIT ?",
            (cid, name, job, limit),
        )
    return [msgspec.json.decode(r[0], type=RunReport) for r in rows.fetchall()]


def load_assets(conn: sqlite3.Connection, cid: str, name: str) -> list[AssetRow]:
    rows = conn.execute(
        "SELECT asset_id, identity, vanished FROM integration_assets WHERE "
        "connector_id = ? AND name = ? ORDER BY asset_id",
        (cid, name),
    )
    return [AssetRow(r[0], r[1], bool(r[2])) for r in rows.fetchall()]


def upsert_asset(
    conn: sqlite3.Connection, cid: str, name: str, asset_id: str, identity: str, ts: int
) -> None:
    conn.execute(
        "INSERT INTO integration_assets VALUES (?, ?, ?, ?, ?, ?, 0) "
        "ON CONFLICT (connector_id, name, asset_id) DO UPDATE SET identity = excluded.identity, "
        "last_seen = excluded.last_seen, vanished = 0",
        (cid, name, asset_id, identity, ts, ts),
    )


def mark_vanished(conn: sqlite3.Connection, cid: str, name: str, asset_ids: list[str]) -> None:
    conn.executemany(
        "UPDATE integration_assets SET vanished = 1 WHERE connector_id = ? AND "
        "name = ? AND asset_id = ?",
        [(cid, name, a) for a in asset_ids],
    )
