"""The read side's queries, written once for both backends, and their rows as Structs.

Each read of :class:`gateway.store.api.Store` is one function here, against the
:class:`ReadConn` protocol (``one``, ``all``, ``any_of``); :class:`Reads` gives the typed
methods and leaves one hook to the backend, :meth:`Reads._read`: *where* a read runs.
``gateway/store/sqlite/reader.py`` runs it on the calling thread's own read-only
connection (WAL: a read never waits for a commit); ``gateway/store/postgresql/reader.py``
on a pooled connection in a worker thread, tried once more on a fresh connection when the
server dropped the pooled one (docs/decisions.md "Store seam", "One set of reads").

The SQL keeps the rules of the op handlers' (``gateway/store/ops/_tx.py``): SQLite's plain
``?`` placeholders (the PostgreSQL connection turns a text into ``%s`` form once and caches
it, ``gateway/store/postgresql/tx.py`` :func:`pg_sql`), forms both engines accept
(``count(*) FILTER (WHERE …)``), and a list test as :meth:`ReadConn.any_of` (an ``IN`` list
of host parameters, or one array parameter).  The one query that differs for real is
:attr:`Reads.last_seq_sql`: SQLite's newest event is ``max(seq)`` on the primary key,
PostgreSQL's the counter row that only commits move (see its writer, "Event sequence
numbers").

Each query walks a key, so a page costs about ``limit`` index steps at a million devices:
devices by (connector, identity) or by the sort column, a tag filter by the ``tags``
primary key (connector, name, value, identity), events by (connector, seq) or the identity
index, a time range turned into a seq range first (:func:`_seq_range`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

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

__all__ = ["EVENT_TS_SKEW_US", "ReadConn", "Reads", "decode_cursor", "encode_cursor"]

T = TypeVar("T")
Row = tuple[Any, ...]

_CHUNK = 500  # values per any_of (SQLite's host parameters per statement)
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
_EVENT_COLS = "seq, ts, type, identity, connection_id, ip, protocol, reason, payload"
_STATUS_WHERE = {
    "locked": "d.locked = 1",
    "online": "d.online = 1",
    "reprovision": "d.reprovision = 1",
    "whitelisted": "d.status = 'whitelisted'",
    "provisioned": "d.status = 'provisioned'",
}


class ReadConn(Protocol):
    """One read's connection, whichever the engine (statements in ``?`` style)."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of ``sql``, or None."""
        ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of ``sql``."""
        ...

    def any_of(self, values: Sequence[object]) -> tuple[str, list[object]]:
        """``(fragment, params)`` testing a column against ``values`` (at most
        :data:`_CHUNK` of them), as :meth:`gateway.store.ops._tx.Tx.any_of`."""
        ...


# -- rows as Structs ---------------------------------------------------------------------


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


def encode_cursor(key: Any, identity: str) -> str:
    """A device page's continuation: its last row's (sort key, identity)."""
    return base64.urlsafe_b64encode(msgspec.json.encode([key, identity])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    """The (sort key, identity) of :func:`encode_cursor`; :class:`BadRequest` if garbled."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, identity = msgspec.json.decode(raw)
    except (ValueError, msgspec.DecodeError, TypeError, RecursionError):
        raise BadRequest("invalid cursor") from None
    if not isinstance(identity, str):
        raise BadRequest("invalid cursor")
    return key, identity


# -- the queries -------------------------------------------------------------------------


def _connectors(c: ReadConn) -> list[ConnectorRow]:
    by: dict[str, list[Resource]] = {}
    for r in c.all(
        "SELECT connector_id, alias, format, unit, allowed, settable, sync, initial "
        "FROM resources ORDER BY connector_id, alias"
    ):
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
        for cid, name, desc, settings, created, updated in c.all(
            "SELECT id, name, description, settings, created, updated FROM connectors ORDER BY id"
        )
    ]


def _tags_for(c: ReadConn, ids: Sequence[int]) -> dict[int, list[Tag]]:
    out: dict[int, list[Tag]] = {i: [] for i in ids}
    for start in range(0, len(ids), _CHUNK):
        frag, params = c.any_of(ids[start : start + _CHUNK])
        for did, name, value in c.all(
            f"SELECT device_id, name, value FROM tags WHERE device_id {frag} ORDER BY name, value",
            params,
        ):
            out[did].append(Tag(name, value))
    return out


def _device_q(c: ReadConn, connector_id: str, identity: str) -> DeviceRow | None:
    row = c.one(
        f"SELECT {_DEVICE_SELECT} FROM devices d WHERE d.connector_id = ? AND d.identity = ?",
        (connector_id, identity),
    )
    if row is None:
        return None
    return _device(row, _tags_for(c, [row[0]])[row[0]])


def _device_by_token_hash(c: ReadConn, connector_id: str, token_hash: str) -> TokenMatch | None:
    row = c.one(
        "SELECT id, identity, locked FROM devices WHERE connector_id = ? AND cred_hash = ?",
        (connector_id, token_hash),
    )
    return None if row is None else TokenMatch(int(row[0]), row[1], bool(row[2]))


def _device_counts(c: ReadConn, connector_id: str) -> DeviceCounts:
    row = c.one(
        "SELECT count(*), count(*) FILTER (WHERE online = 1), "
        "count(*) FILTER (WHERE locked = 1), "
        "count(*) FILTER (WHERE status = 'provisioned'), "
        "count(*) FILTER (WHERE reprovision = 1) FROM devices WHERE connector_id = ?",
        (connector_id,),
    )
    assert row is not None  # an aggregate always answers one row
    total, online, locked, provisioned, reprovision = (int(x) for x in row)
    return DeviceCounts(total, online, locked, provisioned, total - provisioned, reprovision)


def _list_devices(c: ReadConn, query: DeviceQuery) -> Page:
    """Keyset paging by (sort key, identity).  With a tag filter and identity order the
    query walks the first tag's primary key (connector, name, value, identity): a page
    costs ~limit index steps however rare the tag is among a million devices; other tags
    are EXISTS probes on the same key."""
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
        ckey, cident = decode_cursor(query.cursor)
        if key == "identity":
            where.append(f"{ident} {op} ?")
            args.append(cident)
        else:
            if not isinstance(ckey, int) or isinstance(ckey, bool):
                raise BadRequest("invalid cursor")  # the sort columns are integers
            where.append(f"({col} {op} ? OR ({col} = ? AND d.identity {op} ?))")
            args += [ckey, ckey, cident]
    order = "DESC" if query.descending else "ASC"
    order_by = f"{ident} {order}" if key == "identity" else f"{col} {order}, d.identity {order}"
    args.append(query.limit + 1)
    rows = c.all(
        f"SELECT {_DEVICE_SELECT}, {col} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY {order_by} LIMIT ?",
        args,
    )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    tagmap = _tags_for(c, [r[0] for r in rows])
    items = [_device(r, tagmap[r[0]]) for r in rows]
    nxt = encode_cursor(rows[-1][-1], rows[-1][2]) if more and rows else None
    return Page(items, nxt)


def _state_q(c: ReadConn, device_id: int, aliases: Sequence[str] | None) -> list[StateRow]:
    if aliases is None:
        rows = c.all(
            f"SELECT {_STATE_COLS} FROM state WHERE device_id = ? ORDER BY alias", (device_id,)
        )
    else:
        frag, params = c.any_of(aliases)
        rows = c.all(
            f"SELECT {_STATE_COLS} FROM state WHERE device_id = ? AND alias {frag} ORDER BY alias",
            [device_id, *params],
        )
    return [_state(r) for r in rows]


def _pending(c: ReadConn, device_id: int, since: int) -> list[StateRow]:
    rows = c.all(
        f"SELECT {_STATE_COLS} FROM state WHERE device_id = ? AND pending = 1 "
        "AND set_ts > ? ORDER BY set_ts",
        (device_id, since),
    )
    return [_state(r) for r in rows]


def _events(c: ReadConn, query: EventQuery) -> list[CommittedEvent]:
    """The query walks the primary key (connector, seq) in the asked direction, or the
    identity index (connector, identity, seq) when an identity is given: a page costs
    about ``limit`` steps plus the events the other filters skip.  A time range becomes a
    seq range first (:func:`_seq_range`), so an old range does not walk every newer
    event.  Cursor reads (``seq > after``) never skip an event committed later: each
    writer hands out sequence numbers in commit order (its "Event sequence numbers")."""
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
        frag, params = c.any_of(query.types)
        where.append(f"type {frag}")
        args += params
    if query.ip is not None:
        where.append("ip = ?")
        args.append(query.ip)
    if query.since is not None or query.until is not None:
        bounds = _seq_range(c, cid, query.since, query.until)
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
    rows = c.all(
        f"SELECT {_EVENT_COLS} FROM events WHERE {' AND '.join(where)} "
        f"ORDER BY seq {order} LIMIT ?",
        args,
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


def _seq_range(c: ReadConn, cid: str, since: int | None, until: int | None) -> list[int] | None:
    """Sequence numbers bounding the events stamped within [since, until] (µs), from two
    probes of the time index; None when no event can be in the range.  Timestamps are
    taken before commit and sequence numbers at commit, so their orders can differ by the
    time a submission waits; the bounds are widened by :data:`EVENT_TS_SKEW_US` and the
    exact times are filtered after."""
    lo, hi = 0, 2**62
    if since is not None:
        row = c.one(
            "SELECT seq FROM events WHERE connector_id = ? AND ts >= ? ORDER BY ts LIMIT 1",
            (cid, since - EVENT_TS_SKEW_US),
        )
        if row is None:
            return None
        lo = int(row[0])
    if until is not None:
        row = c.one(
            "SELECT seq FROM events WHERE connector_id = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
            (cid, until + EVENT_TS_SKEW_US),
        )
        if row is None:
            return None
        hi = int(row[0])
    return [lo, hi]


def _scalar_int(c: ReadConn, sql: str, params: Sequence[Any]) -> int:
    row = c.one(sql, params)
    return 0 if row is None else int(row[0] or 0)


def _content_q(c: ReadConn, connector_id: str, content_id: str) -> ContentRow | None:
    row = c.one(
        f"SELECT {_CONTENT_COLS} FROM content WHERE connector_id = ? AND content_id = ?",
        (connector_id, content_id),
    )
    return None if row is None else _content(row)


def _content_list(c: ReadConn, connector_id: str, prefix: str) -> list[ContentRow]:
    rows = c.all(
        f"SELECT {_CONTENT_COLS} FROM content WHERE connector_id = ? "
        "AND content_id >= ? AND content_id < ? ORDER BY content_id",
        (connector_id, prefix, prefix + "\U0010ffff"),
    )
    return [_content(r) for r in rows]


def _admin_token_known(c: ReadConn, token_hash: str) -> bool:
    return c.one("SELECT 1 FROM admin_tokens WHERE token_hash = ?", (token_hash,)) is not None


def _admin_tokens(c: ReadConn) -> list[AdminToken]:
    rows = c.all("SELECT id, name, created FROM admin_tokens ORDER BY created, id")
    return [AdminToken(*r) for r in rows]


def _integration_q(c: ReadConn, connector_id: str, name: str) -> IntegrationRecord | None:
    r = c.one(
        f"SELECT {_INTEGRATION_COLS} FROM integrations WHERE connector_id = ? AND name = ?",
        (connector_id, name),
    )
    return None if r is None else _integration(r)


def _integrations(c: ReadConn, connector_id: str | None) -> list[IntegrationRecord]:
    if connector_id is None:
        rows = c.all(f"SELECT {_INTEGRATION_COLS} FROM integrations ORDER BY connector_id, name")
    else:
        rows = c.all(
            f"SELECT {_INTEGRATION_COLS} FROM integrations WHERE connector_id = ? ORDER BY name",
            (connector_id,),
        )
    return [_integration(r) for r in rows]


def _integration_health(
    c: ReadConn, connector_id: str, name: str, limit: int, changes_only: bool
) -> list[HealthRow]:
    extra = " AND changed = 1" if changes_only else ""
    rows = c.all(
        "SELECT ts, healthy, status_code, latency_ms, detail, changed "
        f"FROM integration_health WHERE connector_id = ? AND name = ?{extra} "
        "ORDER BY ts DESC LIMIT ?",
        (connector_id, name, limit),
    )
    return [HealthRow(r[0], bool(r[1]), r[2], r[3], r[4], bool(r[5])) for r in rows]


def _integration_runs(
    c: ReadConn, connector_id: str, name: str, job: str | None, limit: int
) -> list[RunRow]:
    if job is None:
        rows = c.all(
            "SELECT id, report FROM integration_runs WHERE connector_id = ? AND name = ? "
            "ORDER BY id DESC LIMIT ?",
            (connector_id, name, limit),
        )
    else:
        rows = c.all(
            "SELECT id, report FROM integration_runs WHERE connector_id = ? AND name = ? "
            "AND job = ? ORDER BY id DESC LIMIT ?",
            (connector_id, name, job, limit),
        )
    return [RunRow(r[0], msgspec.json.decode(r[1])) for r in rows]


def _integration_assets(c: ReadConn, connector_id: str, name: str) -> list[AssetRow]:
    rows = c.all(
        "SELECT asset_id, identity, vanished FROM integration_assets "
        "WHERE connector_id = ? AND name = ? ORDER BY asset_id",
        (connector_id, name),
    )
    return [AssetRow(r[0], r[1], bool(r[2])) for r in rows]


class Reads:
    """Typed reads (blocking).  A backend says where a read runs (:meth:`_read`) and how
    it finds the newest event (:attr:`last_seq_sql`); everything else is here."""

    last_seq_sql: str
    """One row whose first column is the connector's newest committed seq (or no row,
    or NULL, when it has none)."""

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a connection of the backend's choosing."""
        raise NotImplementedError

    def connectors(self) -> list[ConnectorRow]:
        return self._read(_connectors)

    def device(self, connector_id: str, identity: str) -> DeviceRow | None:
        return self._read(_device_q, connector_id, identity)

    def device_by_token_hash(self, connector_id: str, token_hash: str) -> TokenMatch | None:
        return self._read(_device_by_token_hash, connector_id, token_hash)

    def device_counts(self, connector_id: str) -> DeviceCounts:
        return self._read(_device_counts, connector_id)

    def list_devices(self, query: DeviceQuery) -> Page:
        return self._read(_list_devices, query)

    def state(self, device_id: int, aliases: Sequence[str] | None = None) -> list[StateRow]:
        if aliases is not None and not aliases:
            return []
        return self._read(_state_q, device_id, aliases)

    def pending(self, device_id: int, since: int = 0) -> list[StateRow]:
        return self._read(_pending, device_id, since)

    def events(self, query: EventQuery) -> list[CommittedEvent]:
        return self._read(_events, query)

    def last_seq(self, connector_id: str) -> int:
        return self._read(_scalar_int, self.last_seq_sql, (connector_id,))

    def content(self, connector_id: str, content_id: str) -> ContentRow | None:
        return self._read(_content_q, connector_id, content_id)

    def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]:
        return self._read(_content_list, connector_id, prefix)

    def admin_token_known(self, token_hash: str) -> bool:
        return self._read(_admin_token_known, token_hash)

    def admin_tokens(self) -> list[AdminToken]:
        return self._read(_admin_tokens)

    def integration(self, connector_id: str, name: str) -> IntegrationRecord | None:
        return self._read(_integration_q, connector_id, name)

    def integrations(self, connector_id: str | None = None) -> list[IntegrationRecord]:
        return self._read(_integrations, connector_id)

    def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]:
        return self._read(_integration_health, connector_id, name, limit, changes_only)

    def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]:
        return self._read(_integration_runs, connector_id, name, job, limit)

    def integration_assets(self, connector_id: str, name: str) -> list[AssetRow]:
        return self._read(_integration_assets, connector_id, name)
