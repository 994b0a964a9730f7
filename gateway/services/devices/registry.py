"""Device identities as operators see them: show, list, whitelist, change, delete; and the
connection bookkeeping (online, last seen) of authenticated connections.

Every change is one store submission, checked and applied by the store's handler in one
transaction (docs/architecture.md principle 6: a refusal changes nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from gateway.clock import now_us
from gateway.errors import BadRequest, NotFound
from gateway.services.connectors import Registry
from gateway.services.credentials import MIN_PASSWORD_LENGTH, hash_password, hash_token
from gateway.services.devices.model import (
    MAX_TAGS_PER_DEVICE,
    SORT_KEYS,
    Device,
    DeviceAuth,
    Tag,
    TagRef,
    check_tag,
    device_view,
)
from gateway.store.api import (
    CreateDevice,
    DeleteDevice,
    DeviceConnected,
    DeviceCounts,
    DeviceDisconnected,
    DeviceQuery,
    EventMeta,
    Store,
    UpdateDevice,
)

__all__ = ["STATUSES", "DeviceRegistry"]

STATUSES = ("whitelisted", "provisioned", "locked", "online", "reprovision")
MIN_TOKEN_LENGTH = 20


class DeviceRegistry:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- reading -------------------------------------------------------------------------

    async def get(self, cid: str, identity: str) -> Device:
        self.registry.require(cid)
        row = await self.store.device(cid, identity)
        if row is None:
            raise NotFound(f"device {identity!r} not found")
        return device_view(row)

    async def device_id(self, cid: str, identity: str) -> int:
        row = await self.store.device(cid, identity)
        if row is None:
            raise NotFound(f"device {identity!r} not found")
        return row.id

    async def counts(self, cid: str) -> DeviceCounts:
        """The connector's device counts by status (a pass over its devices)."""
        self.registry.require(cid)
        return await self.store.device_counts(cid)

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
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in SORT_KEYS:
            raise BadRequest(f"sort must be one of {', '.join(SORT_KEYS)} (prefix - to reverse)")
        if status is not None and status not in STATUSES:
            raise BadRequest(
                "status must be whitelisted, provisioned, locked, online or reprovision"
            )
        page = await self.store.list_devices(
            DeviceQuery(
                cid,
                prefix=q or None,
                status=status,  # type: ignore[arg-type]  # checked against STATUSES above
                tags=list(tags),
                sort=key,  # type: ignore[arg-type]  # checked against SORT_KEYS above
                descending=descending,
                cursor=cursor or None,
                limit=limit,
            )
        )
        return [device_view(r) for r in page.items], page.next

    # -- whitelisting and changes ---------------------------------------------------------

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
        (a pre-shared token or password, or a certificate PEM to pin).  Raises
        ``AlreadyExists``, ``BadRequest``."""
        connector = self.registry.require(cid)
        connector.settings.identity_format.check(identity)
        for t in tags:
            check_tag(t)
        status = "whitelisted"
        cred_hash = cert_fp = None
        if auth_type is not None or key is not None:
            if auth_type is None or not key:
                raise BadRequest("auth_type and key go together")
            status = "provisioned"
            if auth_type == "token":
                if len(key) < MIN_TOKEN_LENGTH:
                    raise BadRequest(f"a token must have at least {MIN_TOKEN_LENGTH} characters")
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
        await self.store.write(
            [
                CreateDevice(
                    cid,
                    identity,
                    status,
                    now_us(),
                    locked=locked,
                    auth_type=auth_type,
                    cred_hash=cred_hash,
                    cert_fp=cert_fp,
                    expire=expire,
                    tags=list(tags),
                )
            ]
        )
        return await self.get(cid, identity)

    async def update(
        self,
        cid: str,
        identity: str,
        *,
        locked: bool | None = None,
        reprovision: bool | None = None,
        add_tags: Sequence[Tag] = (),
        remove_tags: Sequence[TagRef] = (),
        replace_tags: bool = False,
    ) -> Device:
        """Change a device in one transaction: lock/unlock, revoke credentials
        (``reprovision=True``: the device must activate again and gets new credentials;
        docs/protocol.md §5.4), and edit tags (with ``replace_tags`` the names in
        ``add_tags`` first lose all their values; then ``add_tags`` are added; then
        ``remove_tags`` are removed).  Raises ``NotFound``, ``BadRequest`` (a tag too long,
        more than ``MAX_TAGS_PER_DEVICE``); nothing changes then."""
        self.registry.require(cid)
        for t in add_tags:
            check_tag(t)
        await self.store.write(
            [
                UpdateDevice(
                    cid,
                    identity,
                    locked=locked,
                    reprovision=reprovision,
                    add_tags=list(add_tags),
                    remove_tags=list(remove_tags),
                    replace_tags=replace_tags,
                    max_tags=MAX_TAGS_PER_DEVICE,
                    meta=EventMeta(protocol="api"),
                    timestamp=now_us(),
                )
            ]
        )
        return await self.get(cid, identity)

    async def set_tags(
        self, cid: str, identity: str, tags: Sequence[Tag], *, replace: bool = False
    ) -> Device:
        """Add tags; ``replace`` first drops every existing value of the names given."""
        return await self.update(cid, identity, add_tags=tags, replace_tags=replace)

    async def remove_tags(
        self, cid: str, identity: str, name: str, values: Sequence[str] = ()
    ) -> Device:
        """Remove the given values of tag ``name``, or all its values when none are given."""
        refs = [TagRef(name, v) for v in values] if values else [TagRef(name)]
        return await self.update(cid, identity, remove_tags=refs)

    async def delete(self, cid: str, identity: str) -> None:
        self.registry.require(cid)
        await self.store.write([DeleteDevice(cid, identity, EventMeta(), now_us())])

    # -- connection bookkeeping ----------------------------------------------------------

    def connected(self, auth: DeviceAuth, meta: EventMeta) -> None:
        """Record a connect (online, current connection, last IP/seen, ``connect`` event).
        Not awaited: a connect is not an acknowledgement, and later writes commit after it
        anyway.  A failure reaches the store's ``on_failure`` (logged, debug log)."""
        self.store.submit(
            [DeviceConnected(auth.connector_id, auth.device_id, auth.identity, meta, now_us())],
            detached=True,
        )

    def disconnected(self, auth: DeviceAuth, meta: EventMeta, reason: str) -> None:
        """Record a disconnect; the device goes offline only if ``meta.connection_id`` is
        still its current connection (docs/decisions.md).  Not awaited, like
        :meth:`connected`."""
        self.store.submit(
            [
                DeviceDisconnected(
                    auth.connector_id, auth.device_id, auth.identity, meta, now_us(), reason
                )
            ],
            detached=True,
        )
