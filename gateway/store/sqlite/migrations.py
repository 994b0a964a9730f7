"""Schema migrations: one explicit, ordered list, applied at open by the writer connection.

Each step is an SQL script run in one transaction; applied versions are recorded in
``_migrations`` so upgrades that keep the data directory only run what is new.  Steps are
append-only: never edit a released step, add another with a higher version.  Versions need
not be consecutive (100 is the integrations' tables, numbered when that feature registered
its own step; it keeps its number so existing databases do not run it twice).
"""

from __future__ import annotations

import sqlite3
import time

import msgspec

__all__ = ["MIGRATIONS", "Migration", "migrate"]


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str


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


_V100_INTEGRATIONS = """
        CREATE TABLE integrations (
            connector_id TEXT NOT NULL,
            name         TEXT NOT NULL,
            document     TEXT NOT NULL,              -- the OpenAPI 2 document as uploaded
            doc_version  INTEGER NOT NULL,           -- 1, 2, ... per upload
            api_version  TEXT NOT NULL,              -- info.version
            allow_http   INTEGER NOT NULL DEFAULT 0, -- the development flag admitting http
            config       BLOB NOT NULL,              -- JSON: non-secret configuration values
            secrets      BLOB NOT NULL,              -- JSON: name -> AES-GCM ciphertext
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
            report       BLOB NOT NULL               -- JSON: the services' RunReport
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

# The device's current connection: a disconnect clears ``online`` only while its connection
# is still this one (a newer connection of the identity may have taken over).
_V101_CURRENT_CONNECTION = """
        ALTER TABLE devices ADD COLUMN connection_id TEXT;
"""


# The event log by device, newest first: the console's device page and
# ``GET …/events?identity=`` walk it instead of every event of the connector.
_V102_EVENTS_BY_IDENTITY = """
        CREATE INDEX events_identity ON events (connector_id, identity, seq)
            WHERE identity IS NOT NULL;
"""

# Imports with an id (docs/decisions.md "A CSV import can be re-run after a crash"): the
# outcome of each, written in the transaction that created its devices, so a re-run of the
# same import after a crash returns it instead of importing again.
_V103_IMPORTS = """
        CREATE TABLE imports (
            connector_id TEXT NOT NULL,
            import_id    TEXT NOT NULL,
            digest       TEXT NOT NULL,           -- sha256 of the CSV text
            created      INTEGER NOT NULL,        -- devices the import created
            existing     BLOB NOT NULL,           -- msgspec JSON: identities that existed
            finished     INTEGER NOT NULL,        -- µs
            PRIMARY KEY (connector_id, import_id)
        ) WITHOUT ROWID;
"""


# The nodes of a cluster and their last beat (docs/decisions.md "A lost cluster node"): a node
# that stops beating is declared lost by another, which takes its devices offline.
_V104_CLUSTER_NODES = """
        CREATE TABLE cluster_nodes (
            name   TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,                 -- where its connection ids start
            seen   INTEGER NOT NULL               -- µs, the node's clock at its last beat
        ) WITHOUT ROWID;
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core tables", _V1_CORE),
    Migration(100, "integrations", _V100_INTEGRATIONS),
    Migration(101, "current connection of a device", _V101_CURRENT_CONNECTION),
    Migration(102, "events by identity", _V102_EVENTS_BY_IDENTITY),
    Migration(103, "imports", _V103_IMPORTS),
    Migration(104, "cluster nodes", _V104_CLUSTER_NODES),
)


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply every step not yet recorded, in list order; returns the versions applied now.
    ``conn`` is in autocommit mode (``isolation_level=None``)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied INTEGER NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM _migrations").fetchall()}
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        # One script, one transaction: a crash mid-migration leaves the previous version.
        quoted = m.name.replace("'", "''")
        conn.executescript(
            f"BEGIN;\n{m.sql}\nINSERT INTO _migrations (version, name, applied) "
            f"VALUES ({int(m.version)}, '{quoted}', {int(time.time())});\nCOMMIT;"
        )
        applied.append(m.version)
    return applied
