"""Handlers of the device-identity ops on PostgreSQL (mirroring
``gateway/store/sqlite/ops/devices.py``): whitelisting, bulk import, change, delete, and
provisioning with its docs/protocol.md §12 item 12 checks.  The check reads the device row
``FOR UPDATE``, so two nodes racing to provision one identity serialise on that row and the
second sees the first's result."""

from __future__ import annotations

from gateway.errors import AlreadyExists, BadRequest, ConnAckCode, NotFound, Refused
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
from gateway.store.postgresql.ops._tx import Tx

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
        "SELECT id FROM devices WHERE connector_id = %s AND identity = %s FOR UPDATE",
        (cid, identity),
    )
    if row is None:
        raise NotFound(f"device {identity!r} not found")
    return int(row[0])


def _initial_values(tx: Tx, cid: str) -> _Initial:
    rows = tx.cur.execute(
        "SELECT alias, initial, sync FROM resources WHERE connector_id = %s AND settable = 1 "
        "AND initial IS NOT NULL",
        (cid,),
    ).fetchall()
    return [(a, v, int(s)) for a, v, s in rows]


def _give_initial(tx: Tx, did: int, ts: int, initial: _Initial) -> None:
    """Give a new identity the ``initial`` set value of every settable resource (pending
    for ``sync`` resources)."""
    for alias, value, sync in initial:
        tx.cur.execute(
            "INSERT INTO state (device_id, alias, set_value, set_ts, pending) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (did, alias, value, ts, sync),
        )
        tx.delta.pending_values += sync * tx.cur.rowcount


def _insert_tags(tx: Tx, cid: str, identity: str, did: int, tags: list[Tag]) -> None:
    if tags:
        tx.cur.executemany(
            "INSERT INTO tags VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(cid, t.name, t.value, identity, did) for t in tags],
        )


def _insert_device(
    tx: Tx, cid: str, identity: str, status: str, created: int, **cols: object
) -> int | None:
    """INSERT one device row; its id, or None when the identity exists."""
    names = ["connector_id", "identity", "status", "created", *cols]
    marks = ", ".join(["%s"] * len(names))
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


def import_devices(tx: Tx, op: ImportDevices) -> ImportOutcome:
    cid = op.connector_id
    idents = [r.identity for r in op.rows]
    existing = {
        r[0]
        for r in tx.cur.execute(
            "SELECT identity FROM devices WHERE connector_id = %s AND identity = ANY(%s)",
            (cid, idents),
        ).fetchall()
    }
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
        if did is None:  # another node created it since the look-up above
            if op.all_or_nothing:
                raise AlreadyExists(f"device {row.identity!r} already exists")
            found.append(row.identity)
            continue
        _insert_tags(tx, cid, row.identity, did, row.tags)
        _give_initial(tx, did, op.created, initial)
        n += 1
    tx.delta.devices += n
    return ImportOutcome(n, found)


def update_device(tx: Tx, op: UpdateDevice) -> int:
    cur = tx.cur
    did = _require_id(tx, op.connector_id, op.identity)
    if op.locked is not None:
        cur.execute(
            "UPDATE devices SET locked = %s WHERE id = %s AND locked != %s",
            (int(op.locked), did, int(op.locked)),
        )
        if op.locked and cur.rowcount:
            tx.emit(AppendEvent(op.connector_id, "locked", op.identity, op.meta, op.timestamp))
    if op.reprovision:
        cur.execute(
            "UPDATE devices SET reprovision = 1, cred_hash = NULL, cert_fp = NULL WHERE id = %s",
            (did,),
        )
        tx.emit(AppendEvent(op.connector_id, "reprovision", op.identity, op.meta, op.timestamp))
    elif op.reprovision is False:
        cur.execute("UPDATE devices SET reprovision = 0 WHERE id = %s", (did,))
    if op.replace_tags:
        cur.execute(
            "DELETE FROM tags WHERE device_id = %s AND name = ANY(%s)",
            (did, sorted({t.name for t in op.add_tags})),
        )
    _insert_tags(tx, op.connector_id, op.identity, did, op.add_tags)
    for ref in op.remove_tags:
        if ref.value is None:
            cur.execute("DELETE FROM tags WHERE device_id = %s AND name = %s", (did, ref.name))
        else:
            cur.execute(
                "DELETE FROM tags WHERE device_id = %s AND name = %s AND value = %s",
                (did, ref.name, ref.value),
            )
    if (
        op.add_tags
        and tx.count("SELECT count(*) FROM tags WHERE device_id = %s", (did,)) > op.max_tags
    ):
        raise BadRequest(f"a device carries at most {op.max_tags} tags")
    return did


def delete_device(tx: Tx, op: DeleteDevice) -> None:
    did = _require_id(tx, op.connector_id, op.identity)
    tx.delta.pending_values -= tx.count(
        "SELECT count(*) FROM state WHERE device_id = %s AND pending = 1", (did,)
    )
    tx.cur.execute("DELETE FROM state WHERE device_id = %s", (did,))
    tx.cur.execute("DELETE FROM points WHERE device_id = %s", (did,))
    tx.cur.execute("DELETE FROM tags WHERE device_id = %s", (did,))
    tx.cur.execute("DELETE FROM devices WHERE id = %s", (did,))
    tx.delta.devices -= 1
    tx.emit(AppendEvent(op.connector_id, "deleted", op.identity, op.meta, op.timestamp))


def _claim_identity(tx: Tx, op: ActivateDevice) -> int:
    """The device row to provision (locked), creating it under presenter identity.  Raises
    the §12 item 12 refusals."""
    row = tx.one(
        "SELECT id, status, locked, reprovision, expire FROM devices "
        "WHERE connector_id = %s AND identity = %s FOR UPDATE",
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
    tx.cur.execute(
        "UPDATE devices SET status = 'provisioned', auth_type = %s, cred_hash = %s, "
        "cert_fp = %s, reprovision = 0, lastip = coalesce(%s, lastip), lastseen = %s "
        "WHERE id = %s",
        (op.auth_type, op.cred_hash, op.cert_fp, op.ip, op.timestamp, did),
    )
    tx.emit(AppendEvent(op.connector_id, "provisioned", op.identity, op.meta, op.timestamp))
    return did
