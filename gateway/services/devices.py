"""Device identities: whitelisting, provisioning, authentication, tags, listing.

Every check-and-change (activation, certificate provisioning, bulk import) runs as one
``Call`` in the store's writer thread, so two devices racing for the same identity cannot
both win: the second sees the first's committed row.  Reads that authenticate a connection
use the caller's reader connection (an indexed point lookup).
"""

from __future__ import annotations

import base64
import csv
import io
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from gateway.clock import now_us
from gateway.errors import AlreadyExists, BadRequest, ConnAckCode, GatewayError, NotFound, Refused
from gateway.model import CertClaim
from gateway.services.connectors import Connector, Registry
from gateway.services.credentials import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)
from gateway.store.api import AppendEvent, Call, EventMeta, Store

__all__ = [
    "Device",
    "DeviceAuth",
    "DeviceService",
    "ImportReport",
    "Tag",
]

MAX_TAGS_PER_DEVICE = 256
MAX_TAG_LENGTH = 256
SORT_KEYS = ("identity", "lastseen", "created")


class Tag(msgspec.Struct, frozen=True):
    name: str
    value: str


class AuthInfo(msgspec.Struct, frozen=True):
    type: str | None


class Device(msgspec.Struct, frozen=True):
    """The identity object of docs/protocol.md §6.3 (µs timestamps)."""

    identity: str
    status: str
    locked: bool
    online: bool
    lastip: str | None
    lastseen: int | None
    created: int
    reprovision: bool
    devmode: bool
    auth: AuthInfo
    tags: list[Tag]


class DeviceAuth(msgspec.Struct, frozen=True, gc=False):
    """An authenticated device, as the protocol layers carry it for a connection."""

    connector_id: str
    device_id: int
    identity: str


class ImportRowError(msgspec.Struct, frozen=True):
    line: int
    identity: str | None
    error: str


class ImportReport(msgspec.Struct, frozen=True):
    total: int
    created: int
    errors: list[ImportRowError]
    dry_run: bool


_DEVICE_COLS = (
    "id, identity, status, locked, online, lastip, lastseen, created, reprovision, "
    "devmode, auth_type"
)


def _refused(message: str, reason: str, *, http: int, connack: ConnAckCode) -> Refused:
    return Refused(message, reason=reason, http_status=http, connack=connack)


def not_authenticated(message: str = "invalid credentials") -> Refused:
    return _refused(
        message, "not_authenticated", http=401, connack=ConnAckCode.BAD_USERNAME_OR_PASSWORD
    )


def _check_tag(tag: Tag) -> None:
    if not tag.name or len(tag.name) > MAX_TAG_LENGTH or len(tag.value) > MAX_TAG_LENGTH:
        raise BadRequest(
            f"tag names must be 1-{MAX_TAG_LENGTH} characters and values at most {MAX_TAG_LENGTH}"
        )


def _encode_cursor(key: Any, identity: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([key, identity])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, identity = msgspec.json.decode(raw)
    except (ValueError, msgspec.DecodeError, TypeError):
        raise BadRequest("invalid cursor") from None
    if not isinstance(identity, str):
        raise BadRequest("invalid cursor")
    return key, identity


class DeviceService:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- reading -------------------------------------------------------------------------

    def _tags_for(self, conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, list[Tag]]:
        out: dict[int, list[Tag]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for did, name, value in conn.execute(
                f"SELECT device_id, name, value FROM tags WHERE device_id IN ({marks}) "
                "ORDER BY name, value",
                chunk,
            ):
                out[did].append(Tag(name, value))
        return out

    @staticmethod
    def _device(row: tuple[Any, ...], tags: list[Tag]) -> Device:
        (
            _id,
            identity,
            status,
            locked,
            online,
            lastip,
            lastseen,
            created,
            reprov,
            devmode,
            auth_type,
        ) = row
        return Device(
            identity=identity,
            status=status,
            locked=bool(locked),
            online=bool(online),
            lastip=lastip,
            lastseen=lastseen,
            created=created,
            reprovision=bool(reprov),
            devmode=bool(devmode),
            auth=AuthInfo(auth_type),
            tags=tags,
        )

    def get(self, cid: str, identity: str) -> Device:
        self.registry.require(cid)

        def q(conn: sqlite3.Connection) -> Device:
            row = conn.execute(
                f"SELECT {_DEVICE_COLS} FROM devices WHERE connector_id = ? AND identity = ?",
                (cid, identity),
            ).fetchone()
            if row is None:
                raise NotFound(f"device {identity!r} not found")
            return self._device(row, self._tags_for(conn, [row[0]])[row[0]])

        return self.store.read(q)

    def device_id(self, cid: str, identity: str) -> int:
        row = self.store.read(
            lambda c: c.execute(
                "SELECT id FROM devices WHERE connector_id = ? AND identity = ?", (cid, identity)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"device {identity!r} not found")
        return int(row[0])

    async def list(
        self,
        cid: str,
        *,
        q: str | None = None,
        status: str | None = None,
        tags: Sequence[Tag] = (),
        sort: str = "identity",
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[list[Device], str | None]:
        """One page of devices and the cursor of the next page (None at the end).

        Paging is by keyset (sort key, identity), so page N costs what page 1 costs even at a
        million devices.
        """
        self.registry.require(cid)
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be 1..1000")
        desc = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in SORT_KEYS:
            raise BadRequest(f"sort must be one of {', '.join(SORT_KEYS)} (prefix - to reverse)")
        # With a tag filter and identity order, walk the first tag's primary key
        # (connector, name, value, identity): a page costs ~limit index steps however rare
        # the tag is among a million devices.  Other tags are EXISTS probes on the same key.
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
        if q:
            where.append(f"{ident} >= ? AND {ident} < ?")
            args += [q, q + "\U0010ffff"]
        if status is not None:
            if status == "locked":
                where.append("d.locked = 1")
            elif status == "online":
                where.append("d.online = 1")
            elif status in ("whitelisted", "provisioned"):
                where.append("d.status = ?")
                args.append(status)
            elif status == "reprovision":
                where.append("d.reprovision = 1")
            else:
                raise BadRequest(
                    "status must be whitelisted, provisioned, locked, online or reprovision"
                )
        for tag in probes:
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.connector_id = d.connector_id "
                "AND t.name = ? AND t.value = ? AND t.identity = d.identity)"
            )
            args += [tag.name, tag.value]
        col = f"coalesce(d.{key}, 0)" if key != "identity" else ident
        op = "<" if desc else ">"
        if cursor:
            ckey, cident = _decode_cursor(cursor)
            if key == "identity":
                where.append(f"{ident} {op} ?")
                args.append(cident)
            else:
                where.append(f"({col} {op} ? OR ({col} = ? AND d.identity {op} ?))")
                args += [ckey, ckey, cident]
        order = "DESC" if desc else "ASC"
        order_by = f"{ident} {order}" if key == "identity" else f"{col} {order}, d.identity {order}"
        sql = (
            f"SELECT {', '.join('d.' + c.strip() for c in _DEVICE_COLS.split(','))}, "
            f"{col} FROM {source} WHERE {' AND '.join(where)} ORDER BY {order_by} LIMIT ?"
        )
        args.append(limit + 1)

        def query(conn: sqlite3.Connection) -> tuple[list[Device], str | None]:
            rows = conn.execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            tagmap = self._tags_for(conn, [r[0] for r in rows])
            items = [self._device(r[:-1], tagmap[r[0]]) for r in rows]
            nxt = _encode_cursor(rows[-1][-1], rows[-1][1]) if more and rows else None
            return items, nxt

        return await self.store.read_async(query)

    # -- whitelisting --------------------------------------------------------------------

    async def add(
        self,
        cid: str,
        identity: str,
        *,
        auth_type: Literal["token", "password", "certificate"] | None = None,
        key: str | None = None,
        locked: bool = False,
        tags: Sequence[Tag] = (),
        expire: int | None = None,
    ) -> Device:
        """Whitelist ``identity``; with ``auth_type`` and ``key`` it is provisioned at once
        (a pre-shared token or password, or a certificate PEM to pin)."""
        connector = self.registry.require(cid)
        connector.settings.identity_format.check(identity)
        for t in tags:
            _check_tag(t)
        status = "whitelisted"
        cred_hash = cert_fp = None
        if auth_type is not None or key is not None:
            if auth_type is None or not key:
                raise BadRequest("auth_type and key go together")
            status = "provisioned"
            if auth_type == "token":
                if len(key) < 20:
                    raise BadRequest("a token must have at least 20 characters")
                cred_hash = hash_token(key)
            elif auth_type == "password":
                if len(key) < MIN_PASSWORD_LENGTH:
                    raise BadRequest(
                        f"a password must have at least {MIN_PASSWORD_LENGTH} characters"
                    )
                cred_hash = await hash_password(key)
            else:
                from gateway.tls.pki import fingerprint

                try:
                    cert_fp = fingerprint(key)
                except ValueError as exc:
                    raise BadRequest(f"key is not a PEM certificate: {exc}") from exc
        created = now_us()

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            try:
                cur = conn.execute(
                    "INSERT INTO devices (connector_id, identity, status, locked, auth_type, "
                    "cred_hash, cert_fp, expire, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        identity,
                        status,
                        int(locked),
                        auth_type,
                        cred_hash,
                        cert_fp,
                        expire,
                        created,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"device {identity!r} already exists") from None
            did = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT OR IGNORE INTO tags VALUES (?, ?, ?, ?, ?)",
                [(cid, t.name, t.value, identity, did) for t in tags],
            )
            _initial_state(conn, cid, did, created)

        await self.store.call(tx)
        return self.get(cid, identity)

    async def import_csv(
        self, cid: str, text: str, *, dry_run: bool = False, all_or_nothing: bool = True
    ) -> ImportReport:
        """Bulk whitelist from CSV (docs/protocol.md §8): header ``ID`` [``,Certificate``]
        [``,tag:<name>``...], one identity per line.  Rows with errors are reported by line;
        with ``all_or_nothing`` (the default) any error means nothing is written."""
        connector = self.registry.require(cid)
        fmt = connector.settings.identity_format
        try:
            rows = list(csv.reader(io.StringIO(text)))
        except csv.Error as exc:
            raise BadRequest(f"malformed CSV: {exc}") from exc
        if not rows:
            raise BadRequest("empty CSV: the first line must be a header starting with ID")
        header = [h.strip() for h in rows[0]]
        if not header or header[0].upper() != "ID":
            raise BadRequest("the first line must be a header whose first column is ID")
        cert_col: int | None = None
        tag_cols: list[tuple[int, str]] = []
        for i, h in enumerate(header[1:], start=1):
            if h.lower() in ("certificate", "ssl client certificate"):
                cert_col = i
            elif h.lower().startswith("tag:") and len(h) > 4:
                tag_cols.append((i, h[4:]))
            elif h:
                raise BadRequest(f"unknown CSV column {h!r} (expected Certificate or tag:<name>)")
        errors: list[ImportRowError] = []
        good: list[tuple[str, str | None, list[Tag]]] = []
        seen: set[str] = set()
        from gateway.tls.pki import fingerprint

        for line, row in enumerate(rows[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue
            ident = row[0].strip()
            if len(row) > len(header):
                errors.append(ImportRowError(line, ident, "more columns than the header"))
                continue
            try:
                fmt.check(ident)
            except GatewayError as exc:
                errors.append(ImportRowError(line, ident, exc.message))
                continue
            if ident in seen:
                errors.append(ImportRowError(line, ident, "duplicate identity in the file"))
                continue
            seen.add(ident)
            fp = None
            if cert_col is not None and cert_col < len(row) and row[cert_col].strip():
                try:
                    fp = fingerprint(row[cert_col].strip())
                except ValueError as exc:
                    errors.append(ImportRowError(line, ident, f"bad certificate: {exc}"))
                    continue
            tags = [
                Tag(name, row[i].strip()) for i, name in tag_cols if i < len(row) and row[i].strip()
            ]
            try:
                for t in tags:
                    _check_tag(t)
            except BadRequest as exc:
                errors.append(ImportRowError(line, ident, exc.message))
                continue
            good.append((ident, fp, tags))
        created = now_us()

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> int:
            existing: set[str] = set()
            idents = [g[0] for g in good]
            for start in range(0, len(idents), 500):
                chunk = idents[start : start + 500]
                marks = ",".join("?" * len(chunk))
                existing.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT identity FROM devices WHERE connector_id = ? AND identity IN "
                        f"({marks})",
                        [cid, *chunk],
                    )
                )
            line_of: dict[str, int] = {}
            for line, row in enumerate(rows[1:], start=2):
                if row:
                    line_of.setdefault(row[0].strip(), line)
            errors.extend(
                ImportRowError(line_of.get(ident, 0), ident, "already exists")
                for ident in sorted(existing, key=lambda i: line_of.get(i, 0))
            )
            if dry_run or (all_or_nothing and errors):
                return 0
            todo = [g for g in good if g[0] not in existing]
            n = 0
            for ident, fp, tags in todo:
                cur = conn.execute(
                    "INSERT INTO devices (connector_id, identity, status, auth_type, cert_fp, "
                    "created) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        ident,
                        "provisioned" if fp else "whitelisted",
                        "certificate" if fp else None,
                        fp,
                        created,
                    ),
                )
                did = int(cur.lastrowid or 0)
                if tags:
                    conn.executemany(
                        "INSERT OR IGNORE INTO tags VALUES (?, ?, ?, ?, ?)",
                        [(cid, t.name, t.value, ident, did) for t in tags],
                    )
                _initial_state(conn, cid, did, created)
                n += 1
            return n

        n = await self.store.call(tx)
        errors.sort(key=lambda e: e.line)
        return ImportReport(
            total=len(good) + sum(1 for e in errors if e.error != "already exists"),
            created=n,
            errors=errors,
            dry_run=dry_run,
        )

    async def update(
        self,
        cid: str,
        identity: str,
        *,
        locked: bool | None = None,
        reprovision: bool | None = None,
    ) -> Device:
        """Lock/unlock, or revoke credentials (``reprovision=True``: the device must
        activate again and gets new credentials; docs/protocol.md §5.4)."""
        self.registry.require(cid)

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            row = conn.execute(
                "SELECT id FROM devices WHERE connector_id = ? AND identity = ?", (cid, identity)
            ).fetchone()
            if row is None:
                raise NotFound(f"device {identity!r} not found")
            if locked is not None:
                conn.execute("UPDATE devices SET locked = ? WHERE id = ?", (int(locked), row[0]))
            if reprovision:
                conn.execute(
                    "UPDATE devices SET reprovision = 1, cred_hash = NULL, cert_fp = NULL "
                    "WHERE id = ?",
                    (row[0],),
                )
            elif reprovision is False:
                conn.execute("UPDATE devices SET reprovision = 0 WHERE id = ?", (row[0],))

        await self.store.call(tx)
        return self.get(cid, identity)

    async def delete(self, cid: str, identity: str) -> None:
        self.registry.require(cid)

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            row = conn.execute(
                "SELECT id FROM devices WHERE connector_id = ? AND identity = ?", (cid, identity)
            ).fetchone()
            if row is None:
                raise NotFound(f"device {identity!r} not found")
            for table in ("state", "points", "tags"):
                conn.execute(f"DELETE FROM {table} WHERE device_id = ?", (row[0],))
            conn.execute("DELETE FROM devices WHERE id = ?", (row[0],))
            emit(AppendEvent(cid, "deleted", identity, EventMeta(), now_us()))

        await self.store.call(tx)

    # -- tags (operators only: devices can never set tags) -------------------------------

    async def set_tags(
        self, cid: str, identity: str, tags: Sequence[Tag], *, replace: bool = False
    ) -> Device:
        """Add tags; ``replace`` first drops every existing value of the names given."""
        self.registry.require(cid)
        for t in tags:
            _check_tag(t)

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            did = _require_id(conn, cid, identity)
            if replace:
                conn.executemany(
                    "DELETE FROM tags WHERE device_id = ? AND name = ?",
                    [(did, n) for n in {t.name for t in tags}],
                )
            conn.executemany(
                "INSERT OR IGNORE INTO tags VALUES (?, ?, ?, ?, ?)",
                [(cid, t.name, t.value, identity, did) for t in tags],
            )
            n = conn.execute("SELECT count(*) FROM tags WHERE device_id = ?", (did,)).fetchone()
            if n[0] > MAX_TAGS_PER_DEVICE:
                raise BadRequest(f"a device carries at most {MAX_TAGS_PER_DEVICE} tags")

        await self.store.call(tx)
        return self.get(cid, identity)

    async def remove_tags(
        self, cid: str, identity: str, name: str, values: Sequence[str] = ()
    ) -> Device:
        """Remove the given values of tag ``name``, or all its values when none are given."""
        self.registry.require(cid)

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            did = _require_id(conn, cid, identity)
            if values:
                conn.executemany(
                    "DELETE FROM tags WHERE device_id = ? AND name = ? AND value = ?",
                    [(did, name, v) for v in values],
                )
            else:
                conn.execute("DELETE FROM tags WHERE device_id = ? AND name = ?", (did, name))

        await self.store.call(tx)
        return self.get(cid, identity)

    # -- provisioning --------------------------------------------------------------------

    async def activate(
        self,
        cid: str,
        identity: str,
        *,
        ip: str | None,
        meta: EventMeta,
        password: str | None = None,
    ) -> str | None:
        """Provision ``identity`` (HTTP ``/provision/activate``, MQTT ``$provision``).

        Token mode returns the new token (the only time it exists in clear); password mode
        stores the device-chosen password and returns None.  Refusals follow docs/protocol.md §12
        items 3, 11, 12: 404 not whitelisted, 409 already provisioned, 403 locked / IP not
        allowed / provisioning disabled, 400 identity outside the format.
        """
        connector = self.registry.require(cid)
        prov = connector.settings.provisioning
        _check_provisioning_allowed(connector, identity, ip)
        token: str | None = None
        cred_hash: str
        if prov.auth_type == "token":
            token = new_token()
            cred_hash = hash_token(token)
        elif prov.auth_type == "password":
            if password is None or len(password) < MIN_PASSWORD_LENGTH:
                raise Refused(
                    f"a device password must have at least {MIN_PASSWORD_LENGTH} characters",
                    reason="bad_password",
                    http_status=400,
                )
            cred_hash = await hash_password(password)
        else:
            raise Refused(
                "this connector provisions devices by TLS client certificate",
                reason="certificate_required",
                http_status=400,
            )
        ts = now_us()

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            did = _claim_identity(conn, connector, identity, ts)
            conn.execute(
                "UPDATE devices SET status = 'provisioned', auth_type = ?, cred_hash = ?, "
                "cert_fp = NULL, reprovision = 0, lastip = coalesce(?, lastip), lastseen = ? "
                "WHERE id = ?",
                (prov.auth_type, cred_hash, ip, ts, did),
            )
            emit(AppendEvent(cid, "provisioned", identity, meta, ts))

        await self.store.call(tx)
        return token

    # -- authentication ------------------------------------------------------------------

    def authenticate_token(self, cid: str, token: str) -> DeviceAuth:
        """Token → device, or ``Refused`` (401 / CONNACK 4; locked: 403 / CONNACK 5)."""
        if not token:
            raise not_authenticated("no token")
        h = hash_token(token)
        row = self.store.read(
            lambda c: c.execute(
                "SELECT id, identity, locked FROM devices WHERE connector_id = ? AND cred_hash = ?",
                (cid, h),
            ).fetchone()
        )
        if row is None:
            raise not_authenticated("unknown token")
        if row[2]:
            raise _refused(
                "device is locked", "locked", http=403, connack=ConnAckCode.NOT_AUTHORIZED
            )
        return DeviceAuth(cid, int(row[0]), row[1])

    async def authenticate_password(self, cid: str, identity: str, password: str) -> DeviceAuth:
        row = self.store.read(
            lambda c: c.execute(
                "SELECT id, locked, cred_hash, auth_type FROM devices "
                "WHERE connector_id = ? AND identity = ?",
                (cid, identity),
            ).fetchone()
        )
        if row is None or row[3] != "password" or not row[2]:
            raise not_authenticated("unknown identity or not a password device")
        if not await verify_password(password, row[2]):
            raise not_authenticated("wrong password")
        if row[1]:
            raise _refused(
                "device is locked", "locked", http=403, connack=ConnAckCode.NOT_AUTHORIZED
            )
        return DeviceAuth(cid, int(row[0]), identity)

    async def authenticate_certificate(
        self, cid: str, claim: CertClaim, *, ip: str | None, meta: EventMeta
    ) -> DeviceAuth:
        """Identity = certificate CN.  A known device must present its pinned certificate
        (or any certificate the connector's CA verified); an unknown one is provisioned on
        this first connection if the connector's rules allow it, pinning the certificate."""
        connector = self.registry.require(cid)
        try:
            connector.settings.identity_format.check(claim.cn)
        except GatewayError as exc:
            raise _refused(
                f"certificate CN: {exc.message}",
                "format_mismatch",
                http=403,
                connack=ConnAckCode.IDENTIFIER_REJECTED,
            ) from exc
        row = self.store.read(
            lambda c: c.execute(
                "SELECT id, status, locked, cert_fp, reprovision FROM devices "
                "WHERE connector_id = ? AND identity = ?",
                (cid, claim.cn),
            ).fetchone()
        )
        if row is not None and row[1] == "provisioned" and not row[4]:
            if row[2]:
                raise _refused(
                    "device is locked", "locked", http=403, connack=ConnAckCode.NOT_AUTHORIZED
                )
            if claim.verified or row[3] == claim.fingerprint:
                return DeviceAuth(cid, int(row[0]), claim.cn)
            raise not_authenticated("certificate does not match the one pinned for this device")
        _check_provisioning_allowed(connector, claim.cn, ip)
        ts = now_us()

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> int:
            did = _claim_identity(conn, connector, claim.cn, ts)
            conn.execute(
                "UPDATE devices SET status = 'provisioned', auth_type = 'certificate', "
                "cred_hash = NULL, cert_fp = ?, reprovision = 0, lastip = coalesce(?, lastip), "
                "lastseen = ? WHERE id = ?",
                (claim.fingerprint, ip, ts, did),
            )
            emit(AppendEvent(cid, "provisioned", claim.cn, meta, ts))
            return did

        did = await self.store.call(tx)
        return DeviceAuth(cid, did, claim.cn)

    # -- connection events ---------------------------------------------------------------

    def connected(self, auth: DeviceAuth, meta: EventMeta) -> None:
        """Record a connect (online, last IP/seen, ``connect`` event).  Not awaited: a
        connect is not an acknowledgement, and later writes commit after it anyway."""
        ts = now_us()

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            conn.execute(
                "UPDATE devices SET online = 1, lastip = coalesce(?, lastip), "
                "lastseen = ? WHERE id = ?",
                (meta.ip, ts, auth.device_id),
            )
            emit(AppendEvent(auth.connector_id, "connect", auth.identity, meta, ts))

        self.store.submit([Call(tx)])

    def disconnected(
        self, auth: DeviceAuth, meta: EventMeta, reason: str, *, still_online: bool
    ) -> None:
        ts = now_us()

        def tx(conn: sqlite3.Connection, emit: Callable[[AppendEvent], None]) -> None:
            conn.execute(
                "UPDATE devices SET online = ?, lastseen = ? WHERE id = ?",
                (int(still_online), ts, auth.device_id),
            )
            emit(
                AppendEvent(auth.connector_id, "disconnect", auth.identity, meta, ts, reason=reason)
            )

        self.store.submit([Call(tx)])


def _require_id(conn: sqlite3.Connection, cid: str, identity: str) -> int:
    row = conn.execute(
        "SELECT id FROM devices WHERE connector_id = ? AND identity = ?", (cid, identity)
    ).fetchone()
    if row is None:
        raise NotFound(f"device {identity!r} not found")
    return int(row[0])


def _check_provisioning_allowed(connector: Connector, identity: str, ip: str | None) -> None:
    prov = connector.settings.provisioning
    if not prov.enabled:
        raise _refused(
            "provisioning is disabled for this connector",
            "provisioning_disabled",
            http=403,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
    try:
        connector.settings.identity_format.check(identity)
    except GatewayError as exc:
        raise _refused(
            exc.message, "format_mismatch", http=400, connack=ConnAckCode.IDENTIFIER_REJECTED
        ) from exc
    if not prov.ip_whitelisting.permits(ip):
        raise _refused(
            f"provisioning from {ip} is not allowed",
            "ip_not_allowed",
            http=403,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )


def _claim_identity(conn: sqlite3.Connection, connector: Connector, identity: str, ts: int) -> int:
    """Inside the writer: the device row to provision, creating it under presenter
    identity.  Raises the §12 item 12 refusals."""
    row = conn.execute(
        "SELECT id, status, locked, reprovision, expire FROM devices "
        "WHERE connector_id = ? AND identity = ?",
        (connector.id, identity),
    ).fetchone()
    if row is None:
        if not connector.settings.provisioning.presenter_identity:
            raise _refused(
                f"identity {identity!r} is not whitelisted",
                "presenter_identity_disabled",
                http=404,
                connack=ConnAckCode.NOT_AUTHORIZED,
            )
        cur = conn.execute(
            "INSERT INTO devices (connector_id, identity, status, created) VALUES (?, ?, ?, ?)",
            (connector.id, identity, "whitelisted", ts),
        )
        assert cur.lastrowid is not None
        _initial_state(conn, connector.id, cur.lastrowid, ts)
        return cur.lastrowid
    did, status, locked, reprovision, expire = row
    if locked:
        raise _refused("device is locked", "locked", http=403, connack=ConnAckCode.NOT_AUTHORIZED)
    if status == "provisioned" and not reprovision:
        raise _refused(
            f"identity {identity!r} is already provisioned",
            "already_provisioned",
            http=409,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
    if status == "whitelisted" and expire is not None and expire < ts:
        raise _refused(
            f"the activation window of {identity!r} has expired",
            "expired",
            http=404,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
    return int(did)


def _initial_state(conn: sqlite3.Connection, cid: str, did: int, ts: int) -> None:
    """Give a new identity the ``initial`` set value of every settable resource."""
    rows = conn.execute(
        "SELECT alias, initial, sync FROM resources WHERE connector_id = ? AND settable = 1 "
        "AND initial IS NOT NULL",
        (cid,),
    ).fetchall()
    if rows:
        conn.executemany(
            "INSERT OR IGNORE INTO state (device_id, alias, set_value, set_ts, pending) "
            "VALUES (?, ?, ?, ?, ?)",
            [(did, a, v, ts, int(s)) for a, v, s in rows],
        )
