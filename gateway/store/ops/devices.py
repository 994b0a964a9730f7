"""Handlers of the device-identity ops, for both backends: whitelisting, bulk import,
change, delete, and provisioning with its docs/protocol.md §12 item 12 checks.  The checks
run here, in the writer, so two devices racing for one identity cannot both win: on SQLite
the one writer thread serialises them; on PostgreSQL, where nodes write concurrently, the
check reads the device row ``FOR UPDATE`` (:attr:`~gateway.store.ops._tx.Tx.lock_rows`)
and an insert that lost a race finds the row (``ON CONFLICT DO NOTHING``), so the second
sees the first's result."""

from __future__ import annotations

import msgspec

from gateway.errors import AlreadyExists, BadRequest, Conflict, ConnAckCode, NotFound, Refused
from gateway.store.api import (
    ActivateDevice,
    AppendEvent,
    CreateDevice,
    DeleteDevice,
    ImportDevices,
    ImportOutcome,
    Tag,
    UpdateDevice,
)
from gateway.store.ops._tx import ANY_OF_MAX, Tx

__all__ = [
    "activate_device",
    "create_device",
    "delete_device",
    "import_devices",
    "update_device",
]

_Initial = list[tuple[str, str, int]]  # (alias, initial value, sync) of settable resources


def _refused(message: str, reason: str, *, http: int, connack: ConnAckCode) -> Refused:
    return Refused(message, reason=reason, http_status=http, connack=connack)


def _require_id(tx: Tx, cid: str, identity: str) -> int:
    row = tx.one(
        "SELECT id FROM devices WHERE connector_id = ? AND identity = ?" + tx.lock_rows,
        (cid, identity),
    )
    if row is None:
        raise NotFound(f"device {identity!r} not found")
    return int(row[0])


def _initial_values(tx: Tx, cid: str) -> _Initial:
    rows = tx.all(
        "SELECT alias, initial, sync FROM resources WHERE connector_id = ? AND settable = 1 "
        "AND initial IS NOT NULL",
        (cid,),
    )
    return [(a, v, int(s)) for a, v, s in rows]


def _give_initial(tx: Tx, did: int, ts: int, initial: _Initial) -> None:
    """Give a new identity the ``initial`` set value of every settable resource (pending
    for ``sync`` resources)."""
    for alias, value, sync in initial:
        added = tx.execute(
            "INSERT INTO state (device_id, alias, set_value, set_ts, pending) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (did, alias, value, ts, sync),
        )
        tx.delta.pending_values += sync * added


def _insert_tags(tx: Tx, cid: str, identity: str, did: int, tags: list[Tag]) -> None:
    if tags:
        tx.executemany(
            "INSERT INTO tags VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(cid, t.name, t.value, identity, did) for t in tags],
        )


def _insert_device(
    tx: Tx, cid: str, identity: str, status: str, created: int, **cols: object
) -> int | None:
    """INSERT one device row; its id, or None when the identity exists."""
    names = ["connector_id", "identity", "status", "created", *cols]
    marks = ", ".join(["?"] * len(names))
    row = tx.one(
        f"INSERT INTO devices ({', '.join(names)}) VALUES ({marks}) "
        "ON CONFLICT (connector_id, identity) DO NOTHING RETURNING id",
        (cid, identity, status, created, *cols.values()),
    )
    return None if row is None else int(row[0])


def create_device(tx: Tx, op: CreateDevice) -> int:
    did = _insert_device(
        tx,
        op.connector_id,
        op.identity,
        op.status,
        op.created,
        locked=int(op.locked),
        auth_type=op.auth_type,
        cred_hash=op.cred_hash,
        cert_fp=op.cert_fp,
        expire=op.expire,
    )
    if did is None:
        raise AlreadyExists(f"device {op.identity!r} already exists")
    tx.delta.devices += 1
    _insert_tags(tx, op.connector_id, op.identity, did, op.tags)
    _give_initial(tx, did, op.created, _initial_values(tx, op.connector_id))
    return did


def _recorded_import(tx: Tx, op: ImportDevices) -> ImportOutcome | None:
    """The outcome of an earlier import with ``op.import_id``, if there is one; refuses
    ``Conflict`` when that import was of another CSV text."""
    row = tx.one(
        "SELECT digest, created, existing FROM imports WHERE connector_id = ? AND import_id = ?",
        (op.connector_id, op.import_id),
    )
    if row is None:
        return None
    digest, created, existing = row
    if digest != op.digest:
        raise Conflict(
            f"import id {op.import_id!r} was used for another CSV file; "
            "re-run an import with its own file, or choose a new id"
        )
    return ImportOutcome(int(created), msgspec.json.decode(bytes(existing), type=list[str]), True)


def import_devices(tx: Tx, op: ImportDevices) -> ImportOutcome:
    cid = op.connector_id
    if op.import_id is not None and not op.dry_run:
        recorded = _recorded_import(tx, op)
        if recorded is not None:
            return recorded
    existing: set[str] = set()
    idents = [r.identity for r in op.rows]
    for start in range(0, len(idents), ANY_OF_MAX):
        fragment, args = tx.any_of(idents[start : start + ANY_OF_MAX])
        existing.update(
            r[0]
            for r in tx.all(
                f"SELECT identity FROM devices WHERE connector_id = ? AND identity {fragment}",
                [cid, *args],
            )
        )
    found = [r.identity for r in op.rows if r.identity in existing]  # in line order
    if op.dry_run or (op.all_or_nothing and (op.row_errors or found)):
        return ImportOutcome(0, found)
    initial = _initial_values(tx, cid)
    n = 0
    for row in op.rows:
        if row.identity in existing:
            continue
        did = _insert_device(
            tx,
            cid,
            row.identity,
            "provisioned" if row.cert_fp else "whitelisted",
            op.created,
            auth_type="certificate" if row.cert_fp else None,
            cert_fp=row.cert_fp,
        )
        if did is None:  # another node created it since the look-up above (PostgreSQL)
            if op.all_or_nothing:
                raise AlreadyExists(f"device {row.identity!r} already exists")
            found.append(row.identity)
            continue
        _insert_tags(tx, cid, row.identity, did, row.tags)
        _give_initial(tx, did, op.created, initial)
        n += 1
    tx.delta.devices += n
    if op.import_id is not None:
        # two nodes racing with one id: the second insert fails and its submission rolls
        # back with its devices (the client sends it again and gets the replay)
        tx.execute(
            "INSERT INTO imports (connector_id, import_id, digest, created, existing, finished) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (cid, op.import_id, op.digest, n, msgspec.json.encode(found), op.created),
        )
    return ImportOutcome(n, found)


def update_device(tx: Tx, op: UpdateDevice) -> int:
    did = _require_id(tx, op.connector_id, op.identity)
    if op.locked is not None:
        changed = tx.execute(
            "UPDATE devices SET locked = ? WHERE id = ? AND locked != ?",
            (int(op.locked), did, int(op.locked)),
        )
        if op.locked and changed:
            tx.emit(AppendEvent(op.connector_id, "locked", op.identity, op.meta, op.timestamp))
    if op.reprovision:
        tx.execute(
            "UPDATE devices SET reprovision = 1, cred_hash = NULL, cert_fp = NULL WHERE id = ?",
            (did,),
        )
        tx.emit(AppendEvent(op.connector_id, "reprovision", op.identity, op.meta, op.timestamp))
    elif op.reprovision is False:
        tx.execute("UPDATE devices SET reprovision = 0 WHERE id = ?", (did,))
    if op.replace_tags:
        tx.executemany(
            "DELETE FROM tags WHERE device_id = ? AND name = ?",
            [(did, n) for n in sorted({t.name for t in op.add_tags})],
        )
    _insert_tags(tx, op.connector_id, op.identity, did, op.add_tags)
    for ref in op.remove_tags:
        if ref.value is None:
            tx.execute("DELETE FROM tags WHERE device_id = ? AND name = ?", (did, ref.name))
        else:
            tx.execute(
                "DELETE FROM tags WHERE device_id = ? AND name = ? AND value = ?",
                (did, ref.name, ref.value),
            )
    if (
        op.add_tags
        and tx.count("SELECT count(*) FROM tags WHERE device_id = ?", (did,)) > op.max_tags
    ):
        raise BadRequest(f"a device carries at most {op.max_tags} tags")
    return did


def delete_device(tx: Tx, op: DeleteDevice) -> None:
    did = _require_id(tx, op.connector_id, op.identity)
    tx.delta.pending_values -= tx.count(
        "SELECT count(*) FROM state WHERE device_id = ? AND pending = 1", (did,)
    )
    for table in ("state", "points", "tags"):
        tx.execute(f"DELETE FROM {table} WHERE device_id = ?", (did,))
    tx.execute("DELETE FROM devices WHERE id = ?", (did,))
    tx.delta.devices -= 1
    tx.emit(AppendEvent(op.connector_id, "deleted", op.identity, op.meta, op.timestamp))


def _claim_identity(tx: Tx, op: ActivateDevice) -> int:
    """The device row to provision (locked where rows are), creating it under presenter
    identity.  Raises the §12 item 12 refusals."""
    row = tx.one(
        "SELECT id, status, locked, reprovision, expire FROM devices "
        "WHERE connector_id = ? AND identity = ?" + tx.lock_rows,
        (op.connector_id, op.identity),
    )
    if row is None:
        if not op.presenter_identity:
            raise _refused(
                f"identity {op.identity!r} is not whitelisted",
                "presenter_identity_disabled",
                http=404,
                connack=ConnAckCode.NOT_AUTHORIZED,
            )
        did = _insert_device(tx, op.connector_id, op.identity, "whitelisted", op.timestamp)
        if did is None:  # another node's activation created it first: theirs wins
            raise _refused(
                f"identity {op.identity!r} is already provisioned",
                "already_provisioned",
                http=409,
                connack=ConnAckCode.NOT_AUTHORIZED,
            )
        tx.delta.devices += 1
        _give_initial(tx, did, op.timestamp, _initial_values(tx, op.connector_id))
        return did
    did, status, locked, reprovision, expire = row
    if locked:
        raise _refused("device is locked", "locked", http=403, connack=ConnAckCode.NOT_AUTHORIZED)
    if status == "provisioned" and not reprovision:
        raise _refused(
            f"identity {op.identity!r} is already provisioned",
            "already_provisioned",
            http=409,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
    if status == "whitelisted" and expire is not None and expire < op.timestamp:
        raise _refused(
            f"the activation window of {op.identity!r} has expired",
            "expired",
            http=404,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
    return int(did)


def activate_device(tx: Tx, op: ActivateDevice) -> int:
    did = _claim_identity(tx, op)
    tx.execute(
        "UPDATE devices SET status = 'provisioned', auth_type = ?, cred_hash = ?, cert_fp = ?, "
        "reprovision = 0, lastip = coalesce(?, lastip), lastseen = ? WHERE id = ?",
        (op.auth_type, op.cred_hash, op.cert_fp, op.ip, op.timestamp, did),
    )
    tx.emit(AppendEvent(op.connector_id, "provisioned", op.identity, op.meta, op.timestamp))
    return did
