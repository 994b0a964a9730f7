"""The device values the services and APIs share: the identity object, the authenticated
device a connection carries, CSV import reports, and the refusals of authentication."""

from __future__ import annotations

import msgspec

from gateway.errors import BadRequest, ConnAckCode, Refused
from gateway.store.api import DeviceRow, Tag, TagRef

__all__ = [
    "MAX_TAGS_PER_DEVICE",
    "MAX_TAG_LENGTH",
    "SORT_KEYS",
    "AuthInfo",
    "Device",
    "DeviceAuth",
    "ImportReport",
    "ImportRowError",
    "Tag",
    "TagRef",
    "check_tag",
    "device_view",
    "locked_refusal",
    "not_authenticated",
]

MAX_TAGS_PER_DEVICE = 256
MAX_TAG_LENGTH = 256
SORT_KEYS = ("identity", "lastseen", "created")


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
    """The answer to an import; ``replayed``: an import with this ``import_id`` had already
    been committed, and this is its report again (nothing was written now)."""

    total: int
    created: int
    errors: list[ImportRowError]
    dry_run: bool
    import_id: str | None = None
    replayed: bool = False


def device_view(row: DeviceRow) -> Device:
    return Device(
        identity=row.identity,
        status=row.status,
        locked=row.locked,
        online=row.online,
        lastip=row.lastip,
        lastseen=row.lastseen,
        created=row.created,
        reprovision=row.reprovision,
        devmode=row.devmode,
        auth=AuthInfo(row.auth_type),
        tags=row.tags,
    )


def check_tag(tag: Tag) -> None:
    if not tag.name or len(tag.name) > MAX_TAG_LENGTH or len(tag.value) > MAX_TAG_LENGTH:
        raise BadRequest(
            f"tag names must be 1-{MAX_TAG_LENGTH} characters and values at most {MAX_TAG_LENGTH}"
        )


def not_authenticated(message: str = "invalid credentials") -> Refused:
    return Refused(
        message,
        reason="not_authenticated",
        http_status=401,
        connack=ConnAckCode.BAD_USERNAME_OR_PASSWORD,
    )


def locked_refusal() -> Refused:
    return Refused(
        "device is locked", reason="locked", http_status=403, connack=ConnAckCode.NOT_AUTHORIZED
    )
