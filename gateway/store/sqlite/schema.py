"""Schema migrations, applied in order at open by the writer connection.

Each step is an SQL script run in one transaction; applied versions are recorded in
``_migrations`` so upgrades that keep the data directory only run what is new.  Steps are
append-only: never edit a released step, add another.
"""

from __future__ import annotations

import time

import sqlite_utils

__all__ = ["MIGRATIONS", "migrate"]


_V1_CORE = """
        CREATE TABLE connectors (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            settings    BLOB NOT NULL,            -- msgspec JSON of ConnectorSettings
            created     INTEGER NOT NULL,         -- µs
            updated     INTEGER NOT NULL
        );
        CREATE TABLE resources (
            connector_id TEXT NOT NULL,
            alias        TEXT NOT NULL,
            format       TEXT NOT NULL,
            unit         TEXT NOT NULL DEFAULT '',
            allowed      BLOB NOT NULL DEFAULT '[]',
            settable     INTEGER NOT NULL DEFAULT 0,
            sync         INTEGER NOT NULL DEFAULT 1,
            initial      TEXT,
            PRIMARY KEY (connector_id, alias)
        ) WITHOUT ROWID;
        CREATE TABLE devices (
            id           INTEGER PRIMARY KEY,
            connector_id TEXT NOT NULL,
            identity     TEXT NOT NULL,
            status       TEXT NOT NULL,           -- whitelisted | provisioned
            locked       INTEGER NOT NULL DEFAULT 0,
            auth_type    TEXT,                    -- token | password | certificate
            cred_hash    TEXT,                    -- sha256 of a token; scrypt of a password
            cert_fp      TEXT,                    -- pinned certificate fingerprint
            reprovision  INTEGER NOT NULL DEFAULT 0,
            expire       INTEGER,                 -- activation window end, µs
            devmode      INTEGER NOT NULL DEFAULT 0,
            created      INTEGER NOT NULL,
            lastip       TEXT,
            lastseen     INTEGER,
            online       INTEGER NOT NULL DEFAULT 0,
            UNIQUE (connector_id, identity)
        );
        CREATE INDEX devices_cred ON devices (connector_id, cred_hash) WHERE cred_hash IS NOT NULL;
        CREATE INDEX devices_status ON devices (connector_id, status, identity);
        CREATE TABLE tags (
            connector_id TEXT NOT NULL,
            name         TEXT NOT NULL,
            value        TEXT NOT NULL,
            identity     TEXT NOT NULL,           -- copied: a tag filter pages in identity order
            device_id    INTEGER NOT NULL,        --   straight off this primary key
            PRIMARY KEY (connector_id, name, value, identity)
        ) WITHOUT ROWID;
        CREATE INDEX tags_device ON tags (device_id, name);
        CREATE TABLE state (
            device_id    INTEGER NOT NULL,
            alias        TEXT NOT NULL,
            reported     TEXT,
            reported_ts  INTEGER,
            set_value    TEXT,
            set_ts       INTEGER,
            pending      INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (device_id, alias)
        ) WITHOUT ROWID;
        CREATE INDEX state_pending ON state (device_id) WHERE pending = 1;
        CREATE TABLE points (
            device_id INTEGER NOT NULL,
            alias     TEXT NOT NULL,
            ts        INTEGER NOT NULL,
            vhash     BLOB NOT NULL,              -- blake2b-8 of the value: replay detection
            PRIMARY KEY (device_id, alias, ts, vhash)
        ) WITHOUT ROWID;
        CREATE TABLE events (
            connector_id  TEXT NOT NULL,
            seq           INTEGER NOT NULL,
            ts            INTEGER NOT NULL,       -- µs
            type          TEXT NOT NULL,
            identity      TEXT,
            connection_id TEXT,
            ip            TEXT,
            protocol      TEXT,
            reason        TEXT,
            payload       BLOB,                   -- JSON
            PRIMARY KEY (connector_id, seq)
        ) WITHOUT ROWID;
        CREATE INDEX events_ts ON events (connector_id, ts);
        CREATE TABLE content (
            connector_id TEXT NOT NULL,
            content_id   TEXT NOT NULL,
            sha256       TEXT NOT NULL,           -- blob name under DIR/content/
            size         INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            description  TEXT NOT NULL DEFAULT '',
            tags         BLOB NOT NULL DEFAULT '{}',
            updated      INTEGER NOT NULL,        -- µs
            PRIMARY KEY (connector_id, content_id)
        ) WITHOUT ROWID;
        CREATE TABLE admin_tokens (
            id         TEXT PRIMARY KEY,
            name       TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created    INTEGER NOT NULL
        );
        CREATE TABLE kv (
            key   TEXT PRIMARY KEY,
            value BLOB
        );
"""


MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "core tables", _V1_CORE),
]


def register(version: int, name: str, sql: str) -> None:
    """Add a migration step owned by a feature module (integrations); versions are unique."""
    if any(v == version for v, _, _ in MIGRATIONS):
        raise ValueError(f"migration version {version} registered twice")
    MIGRATIONS.append((version, name, sql))
    MIGRATIONS.sort(key=lambda m: m[0])


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply every step not yet recorded; returns the versions applied now."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied INTEGER NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT version FROM _migrations").fetchall()}
    applied = []
    for version, name, sql in MIGRATIONS:
        if version in done:
            continue
        # One script, one transaction: a crash mid-migration leaves the previous version.
        quoted = name.replace("'", "''")
        db.conn.executescript(
            f"BEGIN;\n{sql}\nINSERT INTO _migrations (version, name, applied) "
            f"VALUES ({int(version)}, '{quoted}', {int(time.time())});\nCOMMIT;"
        )
        applied.append(version)
    return applied
