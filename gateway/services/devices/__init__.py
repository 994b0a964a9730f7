"""Device identities: the registry (``registry.py``: show, list, whitelist, change, delete,
connection bookkeeping), bulk CSV import (``importer.py``), provisioning
(``provisioning.py``) and authentication (``auth.py``); shared values in ``model.py``.

:class:`DeviceService` is the one object the protocol layers and the management API hold
(``services.devices``): the registry's methods plus the other modules' operations bound to
the same store and connector registry, and the process's verified-password proofs
(``passwords.py``).
"""

from __future__ import annotations

from gateway.model import CertClaim
from gateway.services.connectors import Registry
from gateway.services.devices import auth, importer, provisioning
from gateway.services.devices.model import (
    MAX_TAG_LENGTH,
    MAX_TAGS_PER_DEVICE,
    SORT_KEYS,
    AuthInfo,
    Device,
    DeviceAuth,
    ImportReport,
    ImportRowError,
    Tag,
    TagRef,
    not_authenticated,
)
from gateway.services.devices.passwords import PasswordCache
from gateway.services.devices.registry import STATUSES, DeviceRegistry
from gateway.store.api import EventMeta, Store

__all__ = [
    "MAX_TAGS_PER_DEVICE",
    "MAX_TAG_LENGTH",
    "SORT_KEYS",
    "STATUSES",
    "AuthInfo",
    "Device",
    "DeviceAuth",
    "DeviceService",
    "ImportReport",
    "ImportRowError",
    "PasswordCache",
    "Tag",
    "TagRef",
    "not_authenticated",
]


class DeviceService(DeviceRegistry):
    """Everything about device identities (see the package docstring).  ``passwords`` is
    the composition root's: the committed events that invalidate it are fed to it there."""

    def __init__(self, store: Store, registry: Registry, passwords: PasswordCache) -> None:
        super().__init__(store, registry)
        self.passwords = passwords

    async def import_csv(
        self, cid: str, text: str, *, dry_run: bool = False, all_or_nothing: bool = True
    ) -> ImportReport:
        """Bulk whitelist from CSV (:func:`gateway.services.devices.importer.import_csv`)."""
        return await importer.import_csv(
            self.store, self.registry, cid, text, dry_run=dry_run, all_or_nothing=all_or_nothing
        )

    async def activate(
        self,
        cid: str,
        identity: str,
        *,
        ip: str | None,
        meta: EventMeta,
        password: str | None = None,
    ) -> str | None:
        """Provision ``identity``; the new token, or None in password mode
        (:func:`gateway.services.devices.provisioning.activate`)."""
        connector = self.registry.require(cid)
        token, _ = await provisioning.activate(
            self.store, connector, identity, ip=ip, meta=meta, password=password
        )
        return token

    async def authenticate_token(self, cid: str, token: str) -> DeviceAuth:
        return await auth.authenticate_token(self.store, cid, token)

    async def authenticate_password(self, cid: str, identity: str, password: str) -> DeviceAuth:
        return await auth.authenticate_password(self.store, self.passwords, cid, identity, password)

    async def authenticate_certificate(
        self, cid: str, claim: CertClaim, *, ip: str | None, meta: EventMeta
    ) -> DeviceAuth:
        return await auth.authenticate_certificate(
            self.store, self.registry, cid, claim, ip=ip, meta=meta
        )
