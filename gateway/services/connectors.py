"""Connectors (tenants), their settings and resource definitions.

Connectors and resources change rarely and are read on every connection and write, so the
service keeps them in memory (a :class:`Registry`) and updates that copy only after the
change has committed.  The store remains the source of truth; the registry is rebuilt from
it at start.

A connector's TLS server key (``pki.server_key``) reaches the store only sealed with the
node's secret key (:mod:`gateway.services.secretbox`); the registry holds it in clear for
the handshakes.  Keys that an older release stored in clear are sealed at start
(:meth:`ConnectorService.seal_stored_keys`).
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import string
from collections.abc import Callable
from typing import Literal

import msgspec

from gateway.addresses import NetworkSet
from gateway.clock import now_us
from gateway.errors import AlreadyExists, BadRequest, NotFound, StorageFull
from gateway.rules.dispatch import ResourceSpec, ResourceTable
from gateway.rules.identity import IDENTITY_TYPES, validate_identity
from gateway.services.secretbox import SecretBox
from gateway.store.api import (
    ConnectorRow,
    CreateConnector,
    DeleteConnector,
    DeleteResource,
    PutResource,
    Resource,
    Store,
    UpdateConnector,
)
from gateway.tls.contexts import check_server_credentials
from gateway.tls.policy import DefaultPolicy, TlsPolicy

__all__ = [
    "Connector",
    "ConnectorService",
    "ConnectorSettings",
    "IdentityFormat",
    "Registry",
    "Resource",
]

log = logging.getLogger(__name__)

CONNECTOR_ID_RE = re.compile(r"^[a-z0-9]{4,32}$")
ALIAS_RE = re.compile(r"^[^.$/+#\s]{1,64}$")
DEFAULT_MAX_PAYLOAD = 1_048_576  # bytes per resource value (docs/protocol.md §3.1)


class ProtocolSettings(msgspec.Struct, forbid_unknown_fields=True):
    name: Literal["onep:v1/http", "murano:v1/mqtt", "onep", "mqtt"] = "onep:v1/http"
    devmode: bool = False


class IdentityFormatOptions(msgspec.Struct, forbid_unknown_fields=True):
    casing: Literal["mixed", "upper", "lower"] = "mixed"
    length: int = 0


class IdentityFormat(msgspec.Struct, forbid_unknown_fields=True):
    type: str = "opaque"
    prefix: str = ""
    options: IdentityFormatOptions = msgspec.field(default_factory=IdentityFormatOptions)

    def check(self, identity: str) -> None:
        """Raise ``InvalidValue`` unless ``identity`` has this format."""
        validate_identity(
            identity, self.type, self.prefix, self.options.casing, self.options.length
        )


class IpWhitelisting(msgspec.Struct, forbid_unknown_fields=True):
    """Provisioning only from these addresses (docs/protocol.md §6.4): IPv4 or IPv6
    addresses and CIDR networks; an IPv4-mapped IPv6 address or network is compared as the
    IPv4 one it carries (:mod:`gateway.addresses`)."""

    enabled: bool = False
    allowed: list[str] = msgspec.field(default_factory=list)  # IPs or CIDR networks

    def permits(self, ip: str | None) -> bool:
        if not self.enabled:
            return True
        try:
            nets = _networks(tuple(self.allowed))
        except ValueError:  # stored before validation existed: refuse, never widen
            return False
        return ip is not None and ip in nets


@functools.lru_cache(maxsize=256)
def _networks(allowed: tuple[str, ...]) -> NetworkSet:
    """The parsed whitelist (settings change rarely; activations read them often)."""
    return NetworkSet(allowed)


class ProvisioningSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    auth_type: Literal["token", "password", "certificate"] = "token"
    presenter_identity: bool = True
    generate_identity: bool = False
    ip_whitelisting: IpWhitelisting = msgspec.field(default_factory=IpWhitelisting)


class PkiSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = False
    client_ca: str | None = None  # PEM; certificates must chain to it when enabled
    server_cert: str | None = None  # PEM chain: the connector's own server certificate
    server_key: str | None = None  # PEM; write-only through the API


class Limits(msgspec.Struct, forbid_unknown_fields=True):
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_packet_size: int = DEFAULT_MAX_PAYLOAD + 4096


class ConnectorSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The settings object of docs/protocol.md §6.4, minus ``resources`` (their own routes)."""

    protocol: ProtocolSettings = msgspec.field(default_factory=ProtocolSettings)
    identity_format: IdentityFormat = msgspec.field(default_factory=IdentityFormat)
    provisioning: ProvisioningSettings = msgspec.field(default_factory=ProvisioningSettings)
    pki: PkiSettings = msgspec.field(default_factory=PkiSettings)
    limits: Limits = msgspec.field(default_factory=Limits)
    tls: TlsPolicy = msgspec.field(default_factory=DefaultPolicy)  # gateway/tls/policy.py

    def validate(self) -> None:
        fmt = self.identity_format
        if fmt.type not in IDENTITY_TYPES:
            raise BadRequest(f"identity_format.type must be one of {', '.join(IDENTITY_TYPES)}")
        if fmt.options.length < 0 or fmt.options.length > 128:
            raise BadRequest("identity_format.options.length must be 0..128")
        try:
            NetworkSet(self.provisioning.ip_whitelisting.allowed)
        except ValueError as exc:
            raise BadRequest(f"provisioning.ip_whitelisting.allowed: {exc}") from None
        if self.pki.enabled and not self.pki.client_ca:
            raise BadRequest("pki.enabled requires pki.client_ca (PEM)")
        if bool(self.pki.server_cert) != bool(self.pki.server_key):
            raise BadRequest("pki.server_cert and pki.server_key go together")
        if not 64 <= self.limits.max_payload <= 64 * 1_048_576:
            raise BadRequest("limits.max_payload must be between 64 bytes and 64 MiB")

    def check_server_credentials(self, previous: ConnectorSettings | None) -> None:
        """Refuse (``BadRequest``) a new ``pki.server_cert``/``server_key`` pair that could
        not serve a handshake: unparsable, key of another certificate, expired.  Checked
        only when the pair changes, so a certificate that expired in place does not block
        unrelated edits (``/metrics`` shows its expiry)."""
        pki = self.pki
        if not (pki.server_cert and pki.server_key):
            return
        if previous is not None and (previous.pki.server_cert, previous.pki.server_key) == (
            pki.server_cert,
            pki.server_key,
        ):
            return
        try:
            check_server_credentials(pki.server_cert, pki.server_key)
        except ValueError as exc:
            raise BadRequest(f"pki: {exc}") from None


class Connector(msgspec.Struct, frozen=True):
    id: str
    name: str
    description: str
    fqdn: str
    devmode_fqdn: str
    settings: ConnectorSettings
    created: int


class _Entry:
    """Registry slot: one connector and its compiled resource table."""

    __slots__ = ("connector", "resources", "table")

    def __init__(self, connector: Connector, resources: dict[str, Resource]) -> None:
        self.connector = connector
        self.resources = resources
        self.table: ResourceTable | None = None  # compiled lazily by Registry.table()


class Registry:
    """In-memory copy of connectors and resources (updated after commit)."""

    def __init__(self, base_domain: str) -> None:
        self.base_domain = base_domain
        self._by_id: dict[str, _Entry] = {}
        self.version = 0  # bumped on every change; caches key on it

    def fqdn(self, cid: str) -> str:
        return f"{cid}.m2.{self.base_domain}"

    def devmode_fqdn(self, cid: str) -> str:
        return f"{cid}.devmode-m2.{self.base_domain}"

    def connector_for_host(self, host: str) -> tuple[Connector, bool] | None:
        """Map a TLS server name or HTTP Host (port stripped) to (connector, devmode_host)."""
        host = host.lower().rstrip(".")
        if host.startswith("[") or host.count(":") == 1:
            host = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        for suffix, dev in (
            (f".m2.{self.base_domain}", False),
            (f".devmode-m2.{self.base_domain}", True),
        ):
            if host.endswith(suffix):
                entry = self._by_id.get(host[: -len(suffix)])
                return (entry.connector, dev) if entry else None
        return None

    def get(self, cid: str) -> Connector | None:
        entry = self._by_id.get(cid)
        return entry.connector if entry else None

    def require(self, cid: str) -> Connector:
        entry = self._by_id.get(cid)
        if entry is None:
            raise NotFound(f"connector {cid!r} not found")
        return entry.connector

    def entry(self, cid: str) -> _Entry:
        entry = self._by_id.get(cid)
        if entry is None:
            raise NotFound(f"connector {cid!r} not found")
        return entry

    def resources(self, cid: str) -> dict[str, Resource]:
        return self.entry(cid).resources

    def table(self, cid: str) -> ResourceTable:
        """The connector's compiled resource table (the dispatcher's input), cached until
        the resources change."""
        entry = self.entry(cid)
        if entry.table is None:
            entry.table = ResourceTable(
                [
                    ResourceSpec(r.alias, r.format, tuple(r.allowed), r.settable, r.sync)
                    for r in entry.resources.values()
                ]
            )
        return entry.table

    def all(self) -> list[Connector]:
        return sorted((e.connector for e in self._by_id.values()), key=lambda c: c.id)

    def put(self, connector: Connector, resources: dict[str, Resource] | None = None) -> None:
        old = self._by_id.get(connector.id)
        res = resources if resources is not None else (old.resources if old else {})
        self._by_id[connector.id] = _Entry(connector, res)
        self.version += 1

    def drop(self, cid: str) -> None:
        self._by_id.pop(cid, None)
        self.version += 1


def _new_connector_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(14))


def _server_key_context(cid: str) -> str:
    """The AEAD context of a connector's sealed server key (never an integration's
    ``<cid>/<name>/<param>``: it starts with a word that is no connector id)."""
    return f"connector-server-key/{cid}"


class ConnectorService:
    """Create, change and delete connectors and their resources (committed, then cached).

    ``box`` seals the connectors' server keys before they reach the store.  ``on_change(cid)``
    is told after each committed change (the bus: the other processes of the node re-read
    the registry, :meth:`reload`)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        box: SecretBox,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.box = box
        self._on_change = on_change
        self._clear_keys: list[str] = []  # connectors whose stored key is not sealed yet

    def _stored(self, cid: str, settings: ConnectorSettings) -> bytes:
        """Settings as the store keeps them: the server key sealed."""
        key = settings.pki.server_key
        if key is None or SecretBox.is_sealed(key):  # sealed: one that did not open at load
            return msgspec.json.encode(settings)
        sealed = self.box.encrypt(key, context=_server_key_context(cid))
        pki = msgspec.structs.replace(settings.pki, server_key=sealed)
        return msgspec.json.encode(msgspec.structs.replace(settings, pki=pki))

    def _loaded(self, cid: str, raw: str | bytes) -> ConnectorSettings:
        """Settings as the store returned them, server key opened.  A key stored in clear
        (release 0.1.0) is noted for :meth:`seal_stored_keys`; one that does not decrypt
        (the key file was replaced) stays sealed, so that connector's handshakes fail
        (logged) rather than serve another certificate."""
        settings = msgspec.json.decode(raw, type=ConnectorSettings)
        key = settings.pki.server_key
        if key is None:
            return settings
        if not SecretBox.is_sealed(key):
            self._clear_keys.append(cid)
            return settings
        try:
            opened = self.box.decrypt(key, context=_server_key_context(cid))
        except ValueError:
            log.error(
                "connector %s: pki.server_key does not decrypt with this data directory's "
                "secrets.key; its TLS handshakes fail until a new key is set",
                cid,
            )
            return settings
        return msgspec.structs.replace(
            settings, pki=msgspec.structs.replace(settings.pki, server_key=opened)
        )

    async def seal_stored_keys(self) -> list[str]:
        """Rewrite the settings of connectors whose server key :meth:`load` found in clear
        (the upgrade from release 0.1.0), sealed.  Returns their ids."""
        pending, self._clear_keys = self._clear_keys, []
        sealed = []
        for cid in pending:
            connector = self.registry.get(cid)
            if connector is not None:
                try:
                    await self.update(cid, settings=connector.settings)
                except StorageFull:  # the next start finds the key in clear and tries again
                    log.warning("connector %s: server key not sealed yet: the disk is full", cid)
                    continue
                sealed.append(cid)
                log.info("connector %s: server key sealed at rest", cid)
        return sealed

    def _changed(self, cid: str) -> None:
        if self._on_change is not None:
            self._on_change(cid)

    async def load(self) -> None:
        """Fill the registry from the store (at start)."""
        for row in await self.store.connectors():
            self.registry.put(self._from_row(row), {r.alias: r for r in row.resources})

    async def reload(self, cid: str | None) -> None:
        """Another process changed connector ``cid`` (committed): re-read it from the store
        (the whole list is small and read in a thread), or drop it when it is gone.  With
        ``cid`` None every connector is re-read (after changes may have been missed)."""
        rows = {row.id: row for row in await self.store.connectors()}
        wanted = list(rows) if cid is None else [cid]
        if cid is None:
            wanted += [c.id for c in self.registry.all() if c.id not in rows]
        for one in wanted:
            row = rows.get(one)
            if row is None:
                self.registry.drop(one)
            else:
                self.registry.put(self._from_row(row), {r.alias: r for r in row.resources})

    def _from_row(self, row: ConnectorRow) -> Connector:
        settings = self._loaded(row.id, row.settings)
        return self._make(row.id, row.name, row.description, settings, row.created)

    def _make(
        self, cid: str, name: str, desc: str, settings: ConnectorSettings, created: int
    ) -> Connector:
        return Connector(
            cid,
            name,
            desc,
            self.registry.fqdn(cid),
            self.registry.devmode_fqdn(cid),
            settings,
            created,
        )

    async def create(
        self,
        *,
        name: str,
        connector_id: str | None = None,
        description: str = "",
        settings: ConnectorSettings | None = None,
        resources: list[Resource] | None = None,
    ) -> Connector:
        cid = connector_id or _new_connector_id()
        if not CONNECTOR_ID_RE.match(cid):
            raise BadRequest("connector id must be 4-32 lowercase letters or digits")
        if not name or len(name) > 200:
            raise BadRequest("connector name must be 1-200 characters")
        settings = settings or ConnectorSettings()
        settings.validate()
        settings.check_server_credentials(None)
        stored = self._stored(cid, settings)
        resources = resources or []
        seen: set[str] = set()
        for r in resources:
            _check_resource(r)
            if r.alias in seen:
                # the same answer as adding an alias that exists (POST …/resources): 409
                raise AlreadyExists(f"resource {r.alias!r} is given twice")
            seen.add(r.alias)
        created = now_us()
        await self.store.write(
            [CreateConnector(cid, name, description, stored, created, resources)]
        )
        connector = self._make(cid, name, description, settings, created)
        self.registry.put(connector, {r.alias: r for r in resources})
        self._changed(cid)
        return connector

    async def update(
        self,
        cid: str,
        *,
        name: str | None = None,
        description: str | None = None,
        settings: ConnectorSettings | None = None,
    ) -> Connector:
        current = self.registry.require(cid)
        new_name = current.name if name is None else name
        if not new_name or len(new_name) > 200:
            raise BadRequest("connector name must be 1-200 characters")
        new_desc = current.description if description is None else description
        new_settings = settings or current.settings
        new_settings.validate()
        new_settings.check_server_credentials(current.settings)
        stored = self._stored(cid, new_settings)
        await self.store.write([UpdateConnector(cid, new_name, new_desc, stored, now_us())])
        if cid in self._clear_keys:  # this write stored it sealed
            self._clear_keys.remove(cid)
        connector = self._make(cid, new_name, new_desc, new_settings, current.created)
        self.registry.put(connector)
        self._changed(cid)
        return connector

    async def delete(self, cid: str) -> None:
        """The connector and everything it holds (devices, state, events, content rows)."""
        self.registry.require(cid)
        await self.store.write([DeleteConnector(cid)])
        self.registry.drop(cid)
        self._changed(cid)

    # -- resources -----------------------------------------------------------------------

    async def put_resource(self, cid: str, resource: Resource, *, create: bool) -> Resource:
        """Create (``create=True``: 409 if it exists) or replace a resource definition."""
        self.registry.require(cid)
        _check_resource(resource)
        await self.store.write([PutResource(cid, resource, create, now_us())])
        entry = self.registry.entry(cid)
        resources = dict(entry.resources)
        resources[resource.alias] = resource
        self.registry.put(entry.connector, resources)
        self._changed(cid)
        return resource

    async def delete_resource(self, cid: str, alias: str) -> None:
        entry = self.registry.entry(cid)
        if alias not in entry.resources:
            raise NotFound(f"resource {alias!r} not found")
        await self.store.write([DeleteResource(cid, alias)])
        resources = dict(entry.resources)
        resources.pop(alias, None)
        self.registry.put(entry.connector, resources)
        self._changed(cid)


def _check_resource(r: Resource) -> None:
    if not ALIAS_RE.match(r.alias):
        raise BadRequest(
            f"alias {r.alias!r} must be 1-64 characters without '.', '$', '/', '+', '#' or spaces"
        )
    if r.initial is not None and not r.settable:
        raise BadRequest("initial is only valid for settable resources")
    if r.format == "boolean" and r.allowed:
        raise BadRequest("allowed values make no sense for boolean resources")
    for a in r.allowed:
        if r.format == "string" and not isinstance(a, str):
            raise BadRequest("allowed values of a string resource must be strings")
        if r.format == "number" and isinstance(a, str):
            lo, sep, hi = a.partition("-") if not a.startswith("-") else ("", "", "")
            try:
                float(lo)
                float(hi)
            except ValueError:
                raise BadRequest(f"allowed range {a!r} must look like 'low-high'") from None
            if not sep:
                raise BadRequest(f"allowed range {a!r} must look like 'low-high'")
