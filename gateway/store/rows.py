"""What the store's reads return and what its queries ask: plain frozen Structs.

These are the storage-facing shapes (a device row carries its credential hashes, a
connector row its settings as the opaque JSON the services wrote).  The services turn them
into the views the APIs return.  Every Struct here is msgspec-encodable, so a read answered
by another process (a worker reading from the store owner, docs/architecture.md "Scale")
has the same types.  :mod:`gateway.store.api` re-exports all of them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from gateway.metrics import BATCH_SIZE_BOUNDS, COMMIT_SECONDS_BOUNDS

__all__ = [
    "AdminToken",
    "AssetRow",
    "ConnectorRow",
    "ContentRow",
    "DeviceCounts",
    "DeviceQuery",
    "DeviceRow",
    "EventQuery",
    "HealthRow",
    "ImportOutcome",
    "ImportRow",
    "IntegrationRecord",
    "Page",
    "Resource",
    "RunRow",
    "StateRow",
    "StoreStats",
    "Tag",
    "TagRef",
    "TokenMatch",
]

DeviceStatus = Literal["whitelisted", "provisioned", "locked", "online", "reprovision"]
SortKey = Literal["identity", "lastseen", "created"]


class Tag(msgspec.Struct, frozen=True):
    """A device tag (operators set them; devices never can)."""

    name: str
    value: str


class TagRef(msgspec.Struct, frozen=True):
    """A tag to remove: one value of ``name``, or every value when ``value`` is None."""

    name: str
    value: str | None = None


class Resource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A resource definition (docs/protocol.md §4.1), shared by every device of a connector."""

    alias: str
    format: Literal["string", "number", "boolean"] = "string"
    unit: str = ""
    allowed: list[str | float | int] = msgspec.field(default_factory=list)
    settable: bool = False
    sync: bool = True
    initial: str | None = None


class ConnectorRow(msgspec.Struct, frozen=True):
    """A connector as stored.  ``settings`` is the services' msgspec JSON, opaque here."""

    id: str
    name: str
    description: str
    settings: bytes
    created: int  # µs
    updated: int
    resources: list[Resource]


class DeviceRow(msgspec.Struct, frozen=True):
    """A device identity as stored, with the facts authentication needs."""

    id: int
    connector_id: str
    identity: str
    status: str  # whitelisted | provisioned
    locked: bool
    online: bool
    lastip: str | None
    lastseen: int | None
    created: int
    reprovision: bool
    devmode: bool
    auth_type: str | None  # token | password | certificate
    cred_hash: str | None  # SHA-256 of a token, scrypt of a password
    cert_fp: str | None  # pinned certificate fingerprint
    expire: int | None  # activation window end, µs
    tags: list[Tag] = msgspec.field(default_factory=list)


class TokenMatch(msgspec.Struct, frozen=True, gc=False):
    """The device a token hash belongs to (the per-request lookup of the HTTP device API)."""

    device_id: int
    identity: str
    locked: bool


class DeviceCounts(msgspec.Struct, frozen=True):
    """How many devices a connector has, in total and by status."""

    total: int
    online: int
    locked: int
    provisioned: int
    whitelisted: int
    reprovision: int


class DeviceQuery(msgspec.Struct, frozen=True):
    """One page of a device listing.  Paging is by keyset (sort key, identity), so page N
    costs what page 1 costs; ``cursor`` is the ``next`` of the previous :class:`Page`."""

    connector_id: str
    prefix: str | None = None
    status: DeviceStatus | None = None
    tags: list[Tag] = msgspec.field(default_factory=list)  # all must match
    sort: SortKey = "identity"
    descending: bool = False
    cursor: str | None = None
    limit: int = 100


class Page(msgspec.Struct, frozen=True):
    """A page of devices and the cursor of the next one (None at the end)."""

    items: list[DeviceRow]
    next: str | None


class StateRow(msgspec.Struct, frozen=True, gc=False):
    """One alias of a device's state (µs timestamps)."""

    alias: str
    reported: str | None
    reported_ts: int | None
    set_value: str | None
    set_ts: int | None
    pending: bool


class EventQuery(msgspec.Struct, frozen=True):
    """Events of one connector: with ``seq > after`` oldest first, or, when ``before`` is
    set, with ``after < seq < before`` newest first.  The filters narrow either direction: an
    identity, event types (any of them), a peer address, a time range (µs, inclusive)."""

    connector_id: str
    after: int = 0
    limit: int = 100
    before: int | None = None
    identity: str | None = None
    types: tuple[str, ...] = ()
    ip: str | None = None
    since: int | None = None
    until: int | None = None


class ContentRow(msgspec.Struct, frozen=True):
    content_id: str
    content_type: str
    size: int
    sha256: str  # the blob's name under DIR/content/
    description: str
    updated: int  # µs
    tags: dict[str, str]


class AdminToken(msgspec.Struct, frozen=True):
    """An extra admin token as listed (never the token itself)."""

    id: str
    name: str
    created: int  # µs


class IntegrationRecord(msgspec.Struct, frozen=True):
    """A cloud-to-cloud integration as stored; ``secrets`` are ciphertexts already."""

    connector_id: str
    name: str
    document: str
    doc_version: int
    api_version: str
    allow_http: bool
    config: dict[str, Any]
    secrets: dict[str, str]
    settings: dict[str, Any]
    created: int
    updated: int


class HealthRow(msgspec.Struct, frozen=True):
    """One health probe of an integration; ``changed`` when its state differs from the
    probe before it (the first probe counts as a change)."""

    timestamp: int
    healthy: bool
    status_code: int | None
    latency_ms: float
    detail: str
    changed: bool


class RunRow(msgspec.Struct, frozen=True):
    """A job run: its id and the report as the services wrote it (JSON builtins)."""

    id: int
    report: dict[str, Any]


class AssetRow(msgspec.Struct, frozen=True):
    """An upstream asset and the device that stands for it."""

    asset_id: str
    identity: str
    vanished: bool


class ImportRow(msgspec.Struct, frozen=True):
    """One checked row of a CSV import: the identity, a certificate fingerprint to pin
    (the device is then provisioned), its tags."""

    line: int
    identity: str
    cert_fp: str | None = None
    tags: list[Tag] = msgspec.field(default_factory=list)


class ImportOutcome(msgspec.Struct, frozen=True, tag=True):
    """The result of :class:`~gateway.store.api.ImportDevices`: devices created, and the
    identities of the rows that already existed (row errors for the report)."""

    created: int
    existing: list[str]


class StoreStats(msgspec.Struct):
    """Counters for ``/metrics``, kept by the store as it commits (never a ``count(*)`` at
    scrape time).  Gauges (``devices``, ``event_log_size``, ``pending_values``) are seeded
    once when the store opens and then moved by every commit; counters only grow."""

    commits: int = 0
    submissions: int = 0
    failed_submissions: int = 0
    last_batch: int = 0
    max_batch: int = 0
    commit_seconds_total: float = 0.0
    # per-bucket counts over gateway.metrics.COMMIT_SECONDS_BOUNDS / BATCH_SIZE_BOUNDS (+Inf
    # last): the commit latency and group size histograms (their sums: commit_seconds_total
    # and submissions)
    commit_seconds_counts: list[int] = msgspec.field(
        default_factory=lambda: [0] * (len(COMMIT_SECONDS_BOUNDS) + 1)
    )
    batch_size_counts: list[int] = msgspec.field(
        default_factory=lambda: [0] * (len(BATCH_SIZE_BOUNDS) + 1)
    )
    events: int = 0  # events appended since start
    devices: int = 0
    event_log_size: int = 0
    pending_values: int = 0
