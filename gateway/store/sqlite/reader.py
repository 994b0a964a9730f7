"""The SQLite read side: typed queries on per-thread read-only connections.

WAL lets every reader see the last committed snapshot while the writer writes, so a read
never waits for a commit.  Each thread that reads gets its own connection (``query_only``),
created on first use and closed by :meth:`SqliteReader.close`.  The methods here are
blocking; :class:`gateway.store.sqlite.store.SqliteStore` decides which run on the caller's
thread (point lookups: microseconds) and which in a worker thread (listings).  Every SQL
statement of the read side is in this module.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from gateway.errors import BadRequest
from gateway.store.api import (
    AdminToken,
    AssetRow,
    CommittedEvent,
    ConnectorRow,
    ContentRow,
    DeviceCounts,
    DeviceQuery,
    DeviceRow,
    EventQuery,
    HealthRow,
    IntegrationRecord,
    Page,
    Resource,
    RunRow,
    StateRow,
    Tag,
    TokenMatch,
)
from gateway.store.sqlite.writer import connect

__all__ = ["EVENT_TS_SKEW_US", "SqliteReader"]

_CHUNK = 500  # host parameters per IN (...) list
# How far an event's timestamp (taken when its op is made) may lag its commit order: a
# submission waits behind a slow commit for far less than this.
EVENT_TS_SKEW_US = 60_000_000
_DEVICE_COLS = (
    "id",
    "connector_id",
    "identity",
    "status",
    "locked",
    "online",
    "lastip",
    "lastseen",
    "created",
    "reprovision",
    "devmode",
    "auth_type",
    "cred_hash",
    "cert_fp",
    "expire",
)
_DEVICE_SELECT = ", ".join(f"d.{c}" for c in _DEVICE_COLS)
_STATE_COLS = "alias, reported, reported_ts, set_value, set_ts, pending"
_CONTENT_COLS = "content_id, content_type, size, sha256, description, updated, tags"
_INTEGRATION_COLS = (
    "connector_id, name, document, doc_version, api_version, allow_http, config, secrets, "
    "settings, created, updated"
)
_STATUS_WHERE = {
    "locked": "d.locked = 1",
    "online": "d.online = 1",
    "reprovision": "d.reprovision = 1",
    "whitelisted": "d.status = 'whitelisted'",
    "provisioned": "d.status = 'provisioned'",
}


def _device(row: Sequence[Any], tags: list[Tag]) -> DeviceRow:
    return DeviceRow(
        id=row[0],
        connector_id=row[1],
        identity=row[2],
        status=row[3],
        locked=bool(row[4]),
        online=bool(row[5]),
        lastip=row[6],
        lastseen=row[7],
        created=row[8],
        reprovision=bool(row[9]),
        devmode=bool(row[10]),
        auth_type=row[11],
        cred_hash=row[12],
        cert_fp=row[13],
        expire=row[14],
        tags=tags,
    )


def _state(row: Sequence[Any]) -> StateRow:
    return StateRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def _content(row: Sequence[Any]) -> ContentRow:
    cid, ctype, size, sha, desc, updated, tags = row
    return ContentRow(
        cid, ctype, size, sha, desc, updated, msgspec.json.decode(tags, type=dict[str, str])
    )


def _integration(r: Sequence[Any]) -> IntegrationRecord:
    return IntegrationRecord(
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


def _encode_cursor(key: Any, identity: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([key, identity])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, identity = msgspec.json.decode(raw)
    except (ValueError, msgspec.DecodeError, TypeError, RecursionError):
        raise BadRequest("invalid cursor") from None
    if not isinstance(identity, str):
        raise BadRequest("invalid cursor")
    return key, identity


class SqliteReader:
    """Typed reads (blocking).  Thread-safe: each thread uses its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (when no read is running any more)."""
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    # -- connectors ----------------------------------------------------------------------

    def connectors(self) -> list[ConnectorRow]:
        conn = self._conn()
        out = []
        rows = conn.execute(
            "SELECT id, name, description, settings, created, updated FROM connectors ORDER BY id"
        ).fetchall()
        for cid, name, desc, settings, created, updated in rows:
            resources = [
                Resource(
                    alias=r[0],
                    format=r[1],
                    unit=r[2],
                    allowed=msgspec.json.decode(r[3]),
                    settable=bool(r[4]),
                    sync=bool(r[5]),
                    initial=r[6],
                )
                for r in conn.execute(
                    "SELECT alias, format, unit, allowed, settable, sync, initial FROM resources "
                    "WHERE connector_id = ? ORDER BY alias",
                    (cid,),
                )
            ]
            out.append(ConnectorRow(cid, name, desc, bytes(settings), created, updated, resources))
        return out

    # -- devices -------------------------------------------------------------------------

    def _tags_for(self, ids: Sequence[int]) -> dict[int, list[Tag]]:
        conn = self._conn()
        out: dict[int, list[Tag]] = {i: [] for i in ids}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for did, name, value in conn.execute(
                f"SELECT device_id, name, value FROM tags WHERE device_id IN ({marks}) "
                "ORDER BY name, value",
                chunk,
            ):
                out[did].append(Tag(name, value))
        return out

    def device(self, connector_id: str, identity: str) -> DeviceRow | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_DEVICE_SELECT} FROM devices d WHERE d.connector_id = ? "
                "AND d.identity = ?",
                (connector_id, identity),
            )
            .fetchone()
        )
        if row is None:
            return None
        return _device(row, self._tags_for([row[0]])[row[0]])

    def device_by_token_hash(self, connector_id: str, token_hash: str) -> TokenMatch | None:
        row = (
            self._conn()
            .execute(
                "SELECT id, identity, locked FROM devices WHERE connector_id = ? AND cred_hash = ?",
                (connector_id, token_hash),
            )
            .fetchone()
        )
        return None if row is None else TokenMatch(int(row[0]), row[1], bool(row[2]))

    def device_counts(self, connector_id: str) -> DeviceCounts:
        row = (
            self._conn()
            .execute(
                "SELECT count(*), total(online), total(locked), total(status = 'provisioned'), "
                "total(reprovision) FROM devices WHERE connector_id = ?",
                (connector_id,),
            )
            .fetchone()
        )
        total, online, locked, provisioned, reprovision = (int(x) for x in row)
        return DeviceCounts(total, online, locked, provisioned, total - provisioned, reprovision)

    def list_devices(self, query: DeviceQuery) -> Page:
        """Keyset paging by (sort key, identity).  With a tag filter and identity order the
        query walks the first tag's primary key (connector, name, value, identity): a page
        costs ~limit index steps however rare the tag is among a million devices; other
        tags are EXISTS probes on the same key."""
        cid, tags, key = query.connector_id, query.tags, query.sort
        drive = bool(tags) and key == "identity"
        ident = "t0.identity" if drive else "d.identity"
        if drive:
            source = "tags t0 JOIN devices d ON d.id = t0.device_id"
            where = ["t0.connector_id = ? AND t0.name = ? AND t0.value = ?", "d.connector_id = ?"]
            args: list[Any] = [cid, tags[0].name, tags[0].value, cid]
            probes = tags[1:]
        else:
            source = "devices d"
            where = ["d.connector_id = ?"]
            args = [cid]
            probes = tags
        if query.prefix:
            where.append(f"{ident} >= ? AND {ident} < ?")
            args += [query.prefix, query.prefix + "\U0010ffff"]
        if query.status is not None:
            where.append(_STATUS_WHERE[query.status])
        for tag in probes:
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.connector_id = d.connector_id "
                "AND t.name = ? AND t.value = ? AND t.identity = d.identity)"
            )
            args += [tag.name, tag.value]
        col = f"coalesce(d.{key}, 0)" if key != "identity" else ident
        op = "<" if query.descending else ">"
        if query.cursor:
            ckey, cident = _decode_cursor(query.cursor)
            if key == "identity":
                where.append(f"{ident} {op} ?")
                args.append(cident)
            else:
                where.append(f"({col} {op} ? OR ({col} = ? AND d.identity {op} ?))")
                args += [ckey, ckey, cident]
        order = "DESC" if query.descending else "ASC"
        order_by = f"{ident} {order}" if key == "identity" else f"{col} {order}, d.identity {order}"
        sql = (
            f"SELECT {_DEVICE_SELECT}, {col} FROM {source} WHERE {' AND '.join(where)} "
            f"ORDER BY {order_by} LIMIT ?"
        )
        args.append(query.limit + 1)
        rows = self._conn().execute(sql, args).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        tagmap = self._tags_for([r[0] for r in rows])
        items = [_device(r, tagmap[r[0]]) for r in rows]
        nxt = _encode_cursor(rows[-1][-1], rows[-1][2]) if more and rows else None
        return Page(items, nxt)

    # -- state ---------------------------------------------------------------------------

    def state(self, device_id: int, aliases: Sequence[str] | None = None) -> list[StateRow]:
        conn = self._conn()
        if aliases is None:
            rows = conn.execute(
                f"SELECT {_STATE_COLS} FROM state WHERE device_id = ? ORDER BY alias",
                (device_id,),
            ).fetchall()
        else:
            if not aliases:
                return []
            marks = ",".join("?" * len(aliases))
            rows = conn.execute(
                f"SELECT {_STATE_COLS} FROM state WHERE device_id = ? AND alias IN ({marks}) "
                "ORDER BY alias",
                [device_id, *aliases],
            ).fetchall()
        return [_state(r) for r in rows]

    def pending(self, device_id: int, since: int = 0) -> list[StateRow]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {_STATE_COLS} FROM state WHERE device_id = ? AND pending = 1 "
                "AND set_ts > ? ORDER BY set_ts",
                (device_id, since),
            )
            .fetchall()
        )
        return [_state(r) for r in rows]

    # -- events --------------------------------------------------------------------------

    def events(self, query: EventQuery) -> list[CommittedEvent]:
        """The query walks the primary key (connector, seq) in the asked direction, or the
        identity index (connector, identity, seq) when an identity is given: a page costs
        about ``limit`` steps plus the events the other filters skip.  A time range becomes
        a seq range first (:meth:`_seq_range`), so an old range does not walk every newer
        event."""
        cid = query.connector_id
        where = ["connector_id = ?"]
        args: list[Any] = [cid]
        if query.before is None:
            where.append("seq > ?")
            args.append(query.after)
            order = "ASC"
        else:
            where.append("seq < ?")
            args.append(query.before)
            if query.after > 0:
                where.append("seq > ?")
                args.append(query.after)
            order = "DESC"
        if query.identity is not None:
            where.append("identity = ?")
            args.append(query.identity)
        if query.types:
            where.append(f"type IN ({','.join('?' * len(query.types))})")
            args += query.types
        if query.ip is not None:
            where.append("ip = ?")
            args.append(query.ip)
        if query.since is not None or query.until is not None:
            bounds = self._seq_range(cid, query.since, query.until)
            if bounds is None:
                return []
            where.append("seq BETWEEN ? AND ?")
            args += bounds
            if query.since is not None:
                where.append("ts >= ?")
                args.append(query.since)
            if query.until is not None:
                where.append("ts <= ?")
                args.append(query.until)
        args.append(query.limit)
        rows = (
            self._conn()
            .execute(
                "SELECT seq, ts, type, identity, connection_id, ip, protocol, reason, payload "
                f"FROM events WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?",
                args,
            )
            .fetchall()
        )
        return [
            CommittedEvent(
                cid,
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                None if r[8] is None else msgspec.json.decode(r[8]),
            )
            for r in rows
        ]

    def _seq_range(self, cid: str, since: int | None, until: int | None) -> list[int] | None:
        """Sequence numbers bounding the events stamped within [since, until] (µs), from
        two probes of the time index; None when no event can be in the range.  Timestamps
        are taken before commit and sequence numbers at commit, so their orders can differ
        by the time a submission waits; the bounds are widened by :data:`EVENT_TS_SKEW_US`
        and the exact times are filtered after."""
        conn = self._conn()
        lo, hi = 0, 2**62
        if since is not None:
            row = conn.execute(
                "SELECT seq FROM events WHERE connector_id = ? AND ts >= ? ORDER BY ts LIMIT 1",
                (cid, since - EVENT_TS_SKEW_US),
            ).fetchone()
            if row is None:
                return None
            lo = int(row[0])
        if until is not None:
            row = conn.execute(
                "SELECT seq FROM events WHERE connector_id = ? AND ts <= ? "
                "ORDER BY ts DESC LIMIT 1",
                (cid, until + EVENT_TS_SKEW_US),
            ).fetchone()
            if row is None:
                return None
            hi = int(row[0])
        return [lo, hi]

    def last_seq(self, connector_id: str) -> int:
        row = (
            self._conn()
            .execute("SELECT max(seq) FROM events WHERE connector_id = ?", (connector_id,))
            .fetchone()
        )
        return int(row[0] or 0)

    # -- content and admin tokens --------------------------------------------------------

    def content(self, connector_id: str, content_id: str) -> ContentRow | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_CONTENT_COLS} FROM content WHERE connector_id = ? AND content_id = ?",
                (connector_id, content_id),
            )
            .fetchone()
        )
        return None if row is None else _content(row)

    def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {_CONTENT_COLS} FROM content WHERE connector_id = ? "
                "AND content_id >= ? AND content_id < ? ORDER BY content_id",
                (connector_id, prefix, prefix + "\U0010ffff"),
            )
            .fetchall()
        )
        return [_content(r) for r in rows]

    def admin_token_known(self, token_hash: str) -> bool:
        row = (
            self._conn()
            .execute("SELECT 1 FROM admin_tokens WHERE token_hash = ?", (token_hash,))
            .fetchone()
        )
        return row is not None

    def admin_tokens(self) -> list[AdminToken]:
        rows = (
            self._conn()
            .execute("SELECT id, name, created FROM admin_tokens ORDER BY created, id")
            .fetchall()
        )
        return [AdminToken(*r) for r in rows]

    # -- integrations --------------------------------------------------------------------

    def integration(self, connector_id: str, name: str) -> IntegrationRecord | None:
        r = (
            self._conn()
            .execute(
                f"SELECT {_INTEGRATION_COLS} FROM integrations WHERE connector_id = ? AND name = ?",
                (connector_id, name),
            )
            .fetchone()
        )
        return None if r is None else _integration(r)

    def integrations(self, connector_id: str | None = None) -> list[IntegrationRecord]:
        conn = self._conn()
        if connector_id is None:
            rows = conn.execute(
                f"SELECT {_INTEGRATION_COLS} FROM integrations ORDER BY connector_id, name"
            )
        else:
            rows = conn.execute(
                f"SELECT {_INTEGRATION_COLS} FROM integrations WHERE connector_id = ? "
                "ORDER BY name",
                (connector_id,),
            )
        return [_integration(r) for r in rows.fetchall()]

    def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]:
        extra = " AND changed = 1" if changes_only else ""
        rows = (
            self._conn()
            .execute(
                "SELECT ts, healthy, status_code, latency_ms, detail, changed "
                f"FROM integration_health WHERE connector_id = ? AND name = ?{extra} "
                "ORDER BY ts DESC LIMIT ?",
                (connector_id, name, limit),
            )
            .fetchall()
        )
        return [HealthRow(r[0], bool(r[1]), r[2], r[3], r[4], bool(r[5])) for r in rows]

    def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]:
        conn = self._conn()
        if job is None:
            rows = conn.execute(
                "SELECT id, report FROM integration_runs WHERE connector_id = ? AND name = ? "
                "ORDER BY id DESC LIMIT ?",
                (connector_id, name, limit),
            )
        else:
            rows = conn.execute(
                "SELECT id, report FROM integration_runs WHERE connector_id = ? AND name = ? "
                "AND job = ? ORDER BY id DESC LIMIT ?",
                (connector_id, name, job, limit),
            )
        return [RunRow(r[0], msgspec.json.decode(r[1])) for r in rows.fetchall()]

    def integration_assets(self, connector_id: str, name: str) -> list[AssetRow]:
        rows = (
            self._conn()
            .execute(
                "SELECT asset_id, identity, vanished FROM integration_assets "
                "WHERE connector_id = ? AND name = ? ORDER BY asset_id",
                (connector_id, name),
            )
            .fetchall()
        )
        return [AssetRow(r[0], r[1], bool(r[2])) for r in rows]
