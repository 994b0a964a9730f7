"""The PostgreSQL read side: typed queries on a ``psycopg_pool`` of autocommit connections.

Every method here is blocking and borrows one pooled connection for its statements;
:class:`gateway.store.postgresql.store.PgStore` runs each in a worker thread (a read is a
network round trip, never something for the Trio thread).  The queries are those of
``gateway/store/sqlite/reader.py`` in PostgreSQL's dialect, on the same keys, so each one
walks the same index (the tag filter: the ``tags`` primary key, docs/decisions.md
"PostgreSQL").

A pooled connection that the server dropped (a restart) fails its next statement; the read
is tried once more on a connection of its own, since reads change nothing.  A read that
still fails raises :class:`~gateway.errors.StoreFailed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
import psycopg_pool

from gateway.errors import BadRequest, StoreFailed
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
from gateway.store.sqlite.reader import (
    _DEVICE_SELECT,
    _STATUS_WHERE,
    EVENT_TS_SKEW_US,
    _content,
    _decode_cursor,
    _device,
    _encode_cursor,
    _integration,
    _state,
)

__all__ = ["PgReader"]

T = TypeVar("T")
POOL_WAIT_S = 2.0
CONNECT_TIMEOUT_S = 5
Conn = psycopg.Connection[tuple[Any, ...]]

_STATE_COLS = "alias, reported, reported_ts, set_value, set_ts, pending"
_CONTENT_COLS = "content_id, content_type, size, sha256, description, updated, tags"
_INTEGRATION_COLS = (
    "connector_id, name, document, doc_version, api_version, allow_http, config, secrets, "
    "settings, created, updated"
)


class PgReader:
    """Typed reads (blocking, thread-safe: each call borrows its own pooled connection)."""

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "application_name": "gateway-read"},
            open=False,
            # How long a read waits for a connection: reads take milliseconds, so waiting
            # longer only means the server is gone, and the caller should hear it soon.
            timeout=POOL_WAIT_S,
            name="gateway-read",
        )

    def open(self) -> None:
        """Open the pool and wait for its first connection (blocking)."""
        self.pool.open(wait=True, timeout=10.0)

    def close(self) -> None:
        self.pool.close()

    def _run(self, fn: Callable[[Conn], T]) -> T:
        try:
            with self.pool.connection() as conn:
                return fn(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
            pass  # a connection the server dropped, or a pool still backing off: see below
        # Once more on a connection of its own: the pool refills in the background with a
        # growing back-off after an outage, and a read must not wait for that when the
        # server is back (nor hang when it is not: the connect is refused at once).
        try:
            with psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as conn:
                return fn(conn)
        except psycopg.OperationalError as exc:
            raise StoreFailed(f"the database is not reachable: {exc}") from exc

    # -- connectors ----------------------------------------------------------------------

    def connectors(self) -> list[ConnectorRow]:
        def q(conn: Conn) -> list[ConnectorRow]:
            rows = conn.execute(
                "SELECT id, name, description, settings, created, updated FROM connectors "
                "ORDER BY id"
            ).fetchall()
            res = conn.execute(
                "SELECT connector_id, alias, format, unit, allowed, settable, sync, initial "
                "FROM resources ORDER BY connector_id, alias"
            ).fetchall()
            by: dict[str, list[Resource]] = {}
            for r in res:
                by.setdefault(r[0], []).append(
                    Resource(
                        alias=r[1],
                        format=r[2],
                        unit=r[3],
                        allowed=msgspec.json.decode(r[4]),
                        settable=bool(r[5]),
                        sync=bool(r[6]),
                        initial=r[7],
                    )
                )
            return [
                ConnectorRow(cid, name, desc, bytes(settings), created, updated, by.get(cid, []))
                for cid, name, desc, settings, created, updated in rows
            ]

        return self._run(q)

    # -- devices -------------------------------------------------------------------------

    @staticmethod
    def _tags_for(conn: Conn, ids: Sequence[int]) -> dict[int, list[Tag]]:
        out: dict[int, list[Tag]] = {i: [] for i in ids}
        if ids:
            for did, name, value in conn.execute(
                "SELECT device_id, name, value FROM tags WHERE device_id = ANY(%s) "
                "ORDER BY name, value",
                (list(ids),),
            ).fetchall():
                out[did].append(Tag(name, value))
        return out

    def device(self, connector_id: str, identity: str) -> DeviceRow | None:
        def q(conn: Conn) -> DeviceRow | None:
            row = conn.execute(
                f"SELECT {_DEVICE_SELECT} FROM devices d WHERE d.connector_id = %s "
                "AND d.identity = %s",
                (connector_id, identity),
            ).fetchone()
            if row is None:
                return None
            return _device(row, self._tags_for(conn, [row[0]])[row[0]])

        return self._run(q)

    def device_by_token_hash(self, connector_id: str, token_hash: str) -> TokenMatch | None:
        def q(conn: Conn) -> TokenMatch | None:
            row = conn.execute(
                "SELECT id, identity, locked FROM devices WHERE connector_id = %s "
                "AND cred_hash = %s",
                (connector_id, token_hash),
            ).fetchone()
            return None if row is None else TokenMatch(int(row[0]), row[1], bool(row[2]))

        return self._run(q)

    def device_counts(self, connector_id: str) -> DeviceCounts:
        def q(conn: Conn) -> DeviceCounts:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE online = 1), "
                "count(*) FILTER (WHERE locked = 1), "
                "count(*) FILTER (WHERE status = 'provisioned'), "
                "count(*) FILTER (WHERE reprovision = 1) FROM devices WHERE connector_id = %s",
                (connector_id,),
            ).fetchone()
            assert row is not None
            total, online, locked, provisioned, reprovision = (int(x) for x in row)
            return DeviceCounts(
                total, online, locked, provisioned, total - provisioned, reprovision
            )

        return self._run(q)

    def list_devices(self, query: DeviceQuery) -> Page:
        """Keyset paging by (sort key, identity), as the SQLite reader pages.  With a tag
        filter and identity order the query walks the first tag's primary key (connector,
        name, value, identity) in order and stops after ``limit`` + 1 matches: a page costs
        about ``limit`` index steps however many of a million devices carry the tag; other
        tags are EXISTS probes on the same key."""
        cid, tags, key = query.connector_id, query.tags, query.sort
        drive = bool(tags) and key == "identity"
        ident = "t0.identity" if drive else "d.identity"
        if drive:
            source = "tags t0 JOIN devices d ON d.id = t0.device_id"
            where = [
                "t0.connector_id = %s AND t0.name = %s AND t0.value = %s",
                "d.connector_id = %s",
            ]
            args: list[Any] = [cid, tags[0].name, tags[0].value, cid]
            probes = tags[1:]
        else:
            source = "devices d"
            where = ["d.connector_id = %s"]
            args = [cid]
            probes = tags
        if query.prefix:
            where.append(f"{ident} >= %s AND {ident} < %s")
            args += [query.prefix, query.prefix + "\U0010ffff"]
        if query.status is not None:
            where.append(_STATUS_WHERE[query.status])
        for tag in probes:
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.connector_id = d.connector_id "
                "AND t.name = %s AND t.value = %s AND t.identity = d.identity)"
            )
            args += [tag.name, tag.value]
        col = f"coalesce(d.{key}, 0)" if key != "identity" else ident
        op = "<" if query.descending else ">"
        if query.cursor:
            ckey, cident = _decode_cursor(query.cursor)
            if key == "identity":
                where.append(f"{ident} {op} %s")
                args.append(cident)
            else:
                if not isinstance(ckey, int) or isinstance(ckey, bool):
                    raise BadRequest("invalid cursor")  # SQLite compares anything; not here
                where.append(f"({col} {op} %s OR ({col} = %s AND d.identity {op} %s))")
                args += [ckey, ckey, cident]
        order = "DESC" if query.descending else "ASC"
        order_by = f"{ident} {order}" if key == "identity" else f"{col} {order}, d.identity {order}"
        sql = (
            f"SELECT {_DEVICE_SELECT}, {col} FROM {source} WHERE {' AND '.join(where)} "
            f"ORDER BY {order_by} LIMIT %s"
        )
        args.append(query.limit + 1)

        def q(conn: Conn) -> Page:
            rows = conn.execute(sql, args).fetchall()
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            tagmap = self._tags_for(conn, [r[0] for r in rows])
            items = [_device(r, tagmap[r[0]]) for r in rows]
            nxt = _encode_cursor(rows[-1][-1], rows[-1][2]) if more and rows else None
            return Page(items, nxt)

        return self._run(q)

    # -- state ---------------------------------------------------------------------------

    def state(self, device_id: int, aliases: Sequence[str] | None = None) -> list[StateRow]:
        if aliases is not None and not aliases:
            return []

        def q(conn: Conn) -> list[StateRow]:
            if aliases is None:
                rows = conn.execute(
                    f"SELECT {_STATE_COLS} FROM state WHERE device_id = %s ORDER BY alias",
                    (device_id,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_STATE_COLS} FROM state WHERE device_id = %s "
                    "AND alias = ANY(%s) ORDER BY alias",
                    (device_id, list(aliases)),
                ).fetchall()
            return [_state(r) for r in rows]

        return self._run(q)

    def pending(self, device_id: int, since: int = 0) -> list[StateRow]:
        def q(conn: Conn) -> list[StateRow]:
            rows = conn.execute(
                f"SELECT {_STATE_COLS} FROM state WHERE device_id = %s AND pending = 1 "
                "AND set_ts > %s ORDER BY set_ts",
                (device_id, since),
            ).fetchall()
            return [_state(r) for r in rows]

        return self._run(q)

    # -- events --------------------------------------------------------------------------

    def events(self, query: EventQuery) -> list[CommittedEvent]:
        """As ``SqliteReader.events``: the primary key (connector, seq) or the identity
        index, a time range turned into a seq range first.  Cursor reads (``seq > after``)
        never skip an event committed later: see ``writer.py``, "Event sequence numbers"."""
        cid = query.connector_id

        def q(conn: Conn) -> list[CommittedEvent]:
            where = ["connector_id = %s"]
            args: list[Any] = [cid]
            if query.before is None:
                where.append("seq > %s")
                args.append(query.after)
                order = "ASC"
            else:
                where.append("seq < %s")
                args.append(query.before)
                order = "DESC"
            if query.identity is not None:
                where.append("identity = %s")
                args.append(query.identity)
            if query.types:
                where.append("type = ANY(%s)")
                args.append(list(query.types))
            if query.ip is not None:
                where.append("ip = %s")
                args.append(query.ip)
            if query.since is not None or query.until is not None:
                bounds = self._seq_range(conn, cid, query.since, query.until)
                if bounds is None:
                    return []
                where.append("seq BETWEEN %s AND %s")
                args += bounds
                if query.since is not None:
                    where.append("ts >= %s")
                    args.append(query.since)
                if query.until is not None:
                    where.append("ts <= %s")
                    args.append(query.until)
            args.append(query.limit)
            rows = conn.execute(
                "SELECT seq, ts, type, identity, connection_id, ip, protocol, reason, payload "
                f"FROM events WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT %s",
                args,
            ).fetchall()
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

        return self._run(q)

    @staticmethod
    def _seq_range(conn: Conn, cid: str, since: int | None, until: int | None) -> list[int] | None:
        """As ``SqliteReader._seq_range``: seq bounds of [since, until] from two probes of
        the time index, widened by the commit-order skew."""
        lo, hi = 0, 2**62
        if since is not None:
            row = conn.execute(
                "SELECT seq FROM events WHERE connector_id = %s AND ts >= %s ORDER BY ts LIMIT 1",
                (cid, since - EVENT_TS_SKEW_US),
            ).fetchone()
            if row is None:
                return None
            lo = int(row[0])
        if until is not None:
            row = conn.execute(
                "SELECT seq FROM events WHERE connector_id = %s AND ts <= %s "
                "ORDER BY ts DESC LIMIT 1",
                (cid, until + EVENT_TS_SKEW_US),
            ).fetchone()
            if row is None:
                return None
            hi = int(row[0])
        return [lo, hi]

    def last_seq(self, connector_id: str) -> int:
        """The newest committed number (the counter row, which only commits move)."""

        def q(conn: Conn) -> int:
            row = conn.execute(
                "SELECT seq FROM event_seq WHERE connector_id = %s", (connector_id,)
            ).fetchone()
            return 0 if row is None else int(row[0])

        return self._run(q)

    # -- content and admin tokens --------------------------------------------------------

    def content(self, connector_id: str, content_id: str) -> ContentRow | None:
        def q(conn: Conn) -> ContentRow | None:
            row = conn.execute(
                f"SELECT {_CONTENT_COLS} FROM content WHERE connector_id = %s AND content_id = %s",
                (connector_id, content_id),
            ).fetchone()
            return None if row is None else _content(row)

        return self._run(q)

    def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]:
        def q(conn: Conn) -> list[ContentRow]:
            rows = conn.execute(
                f"SELECT {_CONTENT_COLS} FROM content WHERE connector_id = %s "
                "AND content_id >= %s AND content_id < %s ORDER BY content_id",
                (connector_id, prefix, prefix + "\U0010ffff"),
            ).fetchall()
            return [_content(r) for r in rows]

        return self._run(q)

    def admin_token_known(self, token_hash: str) -> bool:
        def q(conn: Conn) -> bool:
            row = conn.execute(
                "SELECT 1 FROM admin_tokens WHERE token_hash = %s", (token_hash,)
            ).fetchone()
            return row is not None

        return self._run(q)

    def admin_tokens(self) -> list[AdminToken]:
        def q(conn: Conn) -> list[AdminToken]:
            rows = conn.execute(
                "SELECT id, name, created FROM admin_tokens ORDER BY created, id"
            ).fetchall()
            return [AdminToken(*r) for r in rows]

        return self._run(q)

    # -- integrations --------------------------------------------------------------------

    def integration(self, connector_id: str, name: str) -> IntegrationRecord | None:
        def q(conn: Conn) -> IntegrationRecord | None:
            r = conn.execute(
                f"SELECT {_INTEGRATION_COLS} FROM integrations WHERE connector_id = %s "
                "AND name = %s",
                (connector_id, name),
            ).fetchone()
            return None if r is None else _integration(r)

        return self._run(q)

    def integrations(self, connector_id: str | None = None) -> list[IntegrationRecord]:
        def q(conn: Conn) -> list[IntegrationRecord]:
            if connector_id is None:
                rows = conn.execute(
                    f"SELECT {_INTEGRATION_COLS} FROM integrations ORDER BY connector_id, name"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_INTEGRATION_COLS} FROM integrations WHERE connector_id = %s "
                    "ORDER BY name",
                    (connector_id,),
                ).fetchall()
            return [_integration(r) for r in rows]

        return self._run(q)

    def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]:
        extra = " AND changed = 1" if changes_only else ""

        def q(conn: Conn) -> list[HealthRow]:
            rows = conn.execute(
                "SELECT ts, healthy, status_code, latency_ms, detail, changed "
                f"FROM integration_health WHERE connector_id = %s AND name = %s{extra} "
                "ORDER BY ts DESC LIMIT %s",
                (connector_id, name, limit),
            ).fetchall()
            return [HealthRow(r[0], bool(r[1]), r[2], r[3], r[4], bool(r[5])) for r in rows]

        return self._run(q)

    def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]:
        def q(conn: Conn) -> list[RunRow]:
            if job is None:
                rows = conn.execute(
                    "SELECT id, report FROM integration_runs WHERE connector_id = %s "
                    "AND name = %s ORDER BY id DESC LIMIT %s",
                    (connector_id, name, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, report FROM integration_runs WHERE connector_id = %s "
                    "AND name = %s AND job = %s ORDER BY id DESC LIMIT %s",
                    (connector_id, name, job, limit),
                ).fetchall()
            return [RunRow(r[0], msgspec.json.decode(r[1])) for r in rows]

        return self._run(q)

    def integration_assets(self, connector_id: str, name: str) -> list[AssetRow]:
        def q(conn: Conn) -> list[AssetRow]:
            rows = conn.execute(
                "SELECT asset_id, identity, vanished FROM integration_assets "
                "WHERE connector_id = %s AND name = %s ORDER BY asset_id",
                (connector_id, name),
            ).fetchall()
            return [AssetRow(r[0], r[1], bool(r[2])) for r in rows]

        return self._run(q)
