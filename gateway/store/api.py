"""The narrow seam between the gateway and its storage: the :class:`Store` protocol and every
value that crosses it.

Everything above this module talks to a :class:`Store`; the SQLite implementation lives in
``gateway/store/sqlite``, and a PostgreSQL one (docs/architecture.md "Scale") implements the
same protocol.  Nothing here mentions a connection, a cursor or SQL.

**Writes are ops.**  An op is a frozen msgspec Struct; together they form one tagged union
(:data:`Op`, tag field ``"op"``, tag = class name), so a batch of ops encodes with
``msgspec.msgpack`` or ``msgspec.json`` and can be sent unchanged to the process that owns
the store.  :meth:`Store.submit` queues a list of ops as one *submission* and returns a
:class:`Ticket`; ``await ticket.wait()`` returns the per-op results only after the
transaction holding them has committed (docs/architecture.md principle 2: an
acknowledgement means durable).  Many submissions share one commit (group commit); each
submission is atomic (its own savepoint): all of its ops apply or none does.

**Check-and-change runs inside the store.**  Activation, certificate provisioning, a CSV
import, tag limits: the op carries the policy facts it needs (``presenter_identity``, the
credential hash, ``max_tags``) and the backend's handler checks and changes in one
transaction, so two devices racing for one identity cannot both win.  A refusal is raised
as a :mod:`gateway.errors` class; the submission rolls back alone and the ticket raises
that error.  Any other failure (the commit, a bug) raises :class:`~gateway.errors.StoreFailed`.
Errors cross a process boundary as :class:`~gateway.errors.ErrorInfo`.

**Submissions nobody awaits** (connect/disconnect bookkeeping, MQTT wills) are submitted
with ``detached=True``: their failure is handed to the ``on_failure`` callback the store
was built with (the services log it and publish a debug-log record), because no caller
will ever look at the ticket.  The callback runs where the submission was made, so it works
the same when the store is in another process.

**Reads are typed ``async`` methods.**  A backend may answer point lookups on the caller's
thread (SQLite: a WAL snapshot, microseconds) and runs long reads in a worker thread.

**After each commit** the committed events (:class:`CommittedEvent`, ``seq`` per connector,
monotonic, gaps allowed) are handed to the one ``on_events`` callback the store was built
with, in the Trio thread, after the tickets of that commit are resolved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import msgspec

from gateway.model import PointWrite
from gateway.store.rows import (
    AdminToken,
    AssetRow,
    ConnectorRow,
    ContentRow,
    DeviceCounts,
    DeviceQuery,
    DeviceRow,
    EventQuery,
    HealthRow,
    ImportOutcome,
    ImportRow,
    IntegrationRecord,
    Page,
    Resource,
    RunRow,
    StateRow,
    StoreStats,
    Tag,
    TagRef,
    TokenMatch,
)

__all__ = [
    "ActivateDevice",
    "AdminToken",
    "AppendEvent",
    "AssetRow",
    "CommittedEvent",
    "ConnectorRow",
    "ContentRow",
    "CreateAdminToken",
    "CreateConnector",
    "CreateDevice",
    "CreateIntegration",
    "DataIn",
    "DeleteConnector",
    "DeleteContent",
    "DeleteDevice",
    "DeleteIntegration",
    "DeleteResource",
    "DeviceConnected",
    "DeviceCounts",
    "DeviceDisconnected",
    "DeviceQuery",
    "DeviceRow",
    "DropConnections",
    "EventMeta",
    "EventQuery",
    "FinishRun",
    "HealthRow",
    "ImportDevices",
    "ImportOutcome",
    "ImportRow",
    "IntegrationRecord",
    "MarkVanished",
    "NodeBeat",
    "Op",
    "OpResult",
    "Page",
    "PointWrite",
    "PutContent",
    "PutResource",
    "ReapNodes",
    "RecordHealth",
    "ResetOnline",
    "Resource",
    "RevokeAdminToken",
    "RunRow",
    "SetValue",
    "SetValues",
    "StartRun",
    "StateRow",
    "Store",
    "StoreStats",
    "Tag",
    "TagRef",
    "Ticket",
    "TokenMatch",
    "UpdateConnector",
    "UpdateDevice",
    "UpdateIntegration",
    "UpsertAsset",
]


class EventMeta(msgspec.Struct, frozen=True, gc=False):
    """Who caused an event: the connection and the protocol it spoke."""

    connection_id: str | None = None
    ip: str | None = None
    protocol: str | None = None


class _Op(msgspec.Struct, frozen=True, gc=False, tag_field="op", tag=True):
    """Base of every op: the tag (``"op": <class name>``) makes :data:`Op` a tagged union."""


# -- device writes and events (the hot path) ------------------------------------------------


class DataIn(_Op, frozen=True, gc=False):
    """A device write request (one HTTP write/record or one MQTT publish): one ``data_in``
    event whose payload groups the points by timestamp, plus the state updates.  Refuses
    (``Refused``, reason ``locked``, ``deleted`` or ``credentials_reset``) a device that was
    locked, deleted or revoked after the writer authenticated: nothing sent after a lock
    is stored, even when it raced the kick.

    Result: the number of points stored (replays excluded).  Consecutive "now" writes of
    one device in one submission are coalesced into one event (docs/decisions.md).
    """

    connector_id: str
    device_id: int
    identity: str
    points: Sequence[PointWrite]
    meta: EventMeta
    timestamp: int  # µs, server time of the request


class AppendEvent(_Op, frozen=True, gc=False):
    """A durable event with no other state change (publish, content_in...).  Result: its
    sequence number."""

    connector_id: str
    type: str
    identity: str | None
    meta: EventMeta
    timestamp: int
    payload: Any = None
    reason: str | None = None


class DeviceConnected(_Op, frozen=True, gc=False):
    """A device connection was authenticated: ``online``, last IP and time, the connection
    (``meta.connection_id``) recorded as the device's current one, a ``connect`` event."""

    connector_id: str
    device_id: int
    identity: str
    meta: EventMeta
    timestamp: int


class DeviceDisconnected(_Op, frozen=True, gc=False):
    """A connection ended: ``lastseen``, a ``disconnect`` event, and ``online`` cleared
    only if ``meta.connection_id`` is still the device's current connection (a newer one,
    on this process or another, may have taken over: docs/decisions.md)."""

    connector_id: str
    device_id: int
    identity: str
    meta: EventMeta
    timestamp: int
    reason: str


class ResetOnline(_Op, frozen=True, gc=False):
    """Nobody is connected (the node starts): clear every ``online`` flag.  Result: how many."""


class DropConnections(_Op, frozen=True, gc=False):
    """A process that held connections died (a node's worker): every device whose current
    connection id starts with ``prefix`` goes offline, with a ``disconnect`` event of
    ``reason`` (its own bookkeeping never ran).  Result: how many."""

    prefix: str
    timestamp: int
    reason: str = "worker_lost"


class NodeBeat(_Op, frozen=True, gc=False):
    """A node of a cluster is alive (docs/decisions.md "A lost cluster node"): its row in
    ``cluster_nodes`` says when it last beat and where its connection ids start (``prefix``).
    ``timestamp`` is the node's own clock (µs).  Result: True when the row was there, False
    when it was (re)created: the node's first beat, or it had been declared lost."""

    node: str
    prefix: str
    timestamp: int


class ReapNodes(_Op, frozen=True, gc=False):
    """Declare lost every node whose last beat is older than ``before`` (µs): its row goes,
    and each device still connected through it goes offline with a ``disconnect`` event of
    ``reason``, as :class:`DropConnections` does for a dead worker.  Two nodes reaping at
    once take each lost node once (its row is deleted in the same transaction).  Result: how
    many nodes were declared lost."""

    before: int
    timestamp: int
    reason: str = "node_lost"


class SetValue(msgspec.Struct, frozen=True, gc=False):
    """One cloud-set value; ``pending`` for ``sync`` resources (pushed until acknowledged)."""

    alias: str
    value: str
    pending: bool


class SetValues(_Op, frozen=True, gc=False):
    """Cloud set (docs/protocol.md §4.3): the ``set`` values and a ``data_out`` event.
    Refuses ``NotFound`` for an unknown device.  Result: the device id."""

    connector_id: str
    identity: str
    values: list[SetValue]
    meta: EventMeta
    timestamp: int


# -- device identities ---------------------------------------------------------------------


class CreateDevice(_Op, frozen=True, gc=False):
    """Whitelist an identity (provisioned at once when credentials are given), with its
    tags and the ``initial`` set values of the connector's settable resources.  Refuses
    ``AlreadyExists``.  Result: the device id."""

    connector_id: str
    identity: str
    status: str  # whitelisted | provisioned
    created: int
    locked: bool = False
    auth_type: str | None = None
    cred_hash: str | None = None
    cert_fp: str | None = None
    expire: int | None = None
    tags: list[Tag] = msgspec.field(default_factory=list)


class ImportDevices(_Op, frozen=True, gc=False):
    """Bulk whitelist (docs/protocol.md §8) of rows the services have checked.  Rows whose
    identity exists are reported, not written.  Nothing is written when ``dry_run``, or when
    ``all_or_nothing`` and there is any row error (``row_errors``: the services found some;
    or an identity exists).  Result: :class:`ImportOutcome`.

    With an ``import_id`` the import is idempotent (docs/decisions.md "A CSV import can be
    re-run after a crash"): its outcome is recorded in the same transaction as its devices,
    so a second import with the same id and the same ``digest`` (of the CSV text) writes
    nothing and returns the recorded outcome (``replayed``); with another digest it is
    refused ``Conflict``.  An import that wrote nothing (dry run, all-or-nothing refusal)
    records nothing."""

    connector_id: str
    rows: list[ImportRow]
    created: int
    dry_run: bool = False
    all_or_nothing: bool = True
    row_errors: bool = False
    import_id: str | None = None
    digest: str = ""


class UpdateDevice(_Op, frozen=True, gc=False):
    """Change a device in one transaction (``PATCH …/devices/{identity}``): lock/unlock,
    revoke credentials (``reprovision=True``), then tags: with ``replace_tags`` the names in
    ``add_tags`` first lose all their values, then ``add_tags`` are added, then
    ``remove_tags`` removed.  Locking an unlocked device appends a ``locked`` event and a
    revocation a ``reprovision`` event (at ``timestamp``), which end the device's live
    sessions wherever they are (``services/control.py``).  Refuses ``NotFound``, and
    ``BadRequest`` past ``max_tags``.  Result: the device id."""

    connector_id: str
    identity: str
    locked: bool | None = None
    reprovision: bool | None = None
    add_tags: list[Tag] = msgspec.field(default_factory=list)
    remove_tags: list[TagRef] = msgspec.field(default_factory=list)
    replace_tags: bool = False
    max_tags: int = 256
    meta: EventMeta = EventMeta()
    timestamp: int = 0  # µs, of the locked / reprovision events


class DeleteDevice(_Op, frozen=True, gc=False):
    """Delete a device, its state, points and tags, with a ``deleted`` event.  Refuses
    ``NotFound``."""

    connector_id: str
    identity: str
    meta: EventMeta
    timestamp: int


class ActivateDevice(_Op, frozen=True, gc=False):
    """Provision an identity (activation, or a certificate's first connection) under the
    rules of docs/protocol.md §12 item 12, checked here: unknown and not
    ``presenter_identity`` → ``Refused`` 404; locked → 403; provisioned and not
    ``reprovision`` → 409; whitelist window expired → 404.  Stores ``cred_hash`` (token or
    password) or pins ``cert_fp``; a ``provisioned`` event.  Result: the device id."""

    connector_id: str
    identity: str
    auth_type: str  # token | password | certificate
    presenter_identity: bool
    meta: EventMeta
    timestamp: int
    cred_hash: str | None = None
    cert_fp: str | None = None
    ip: str | None = None


# -- connectors and resources --------------------------------------------------------------


class CreateConnector(_Op, frozen=True, gc=False):
    """A connector and its resources.  Refuses ``AlreadyExists``."""

    connector_id: str
    name: str
    description: str
    settings: bytes  # the services' JSON; the store keeps it as it is
    created: int
    resources: list[Resource] = msgspec.field(default_factory=list)


class UpdateConnector(_Op, frozen=True, gc=False):
    """Name, description and settings.  Refuses ``NotFound``."""

    connector_id: str
    name: str
    description: str
    settings: bytes
    updated: int


class DeleteConnector(_Op, frozen=True, gc=False):
    """A connector and everything it holds: devices, state, tags, events, content rows."""

    connector_id: str


class PutResource(_Op, frozen=True, gc=False):
    """Create (refuses ``AlreadyExists``) or replace (refuses ``NotFound``) a resource.  A
    created settable resource with an ``initial`` value gives it to every device."""

    connector_id: str
    resource: Resource
    create: bool
    timestamp: int


class DeleteResource(_Op, frozen=True, gc=False):
    """A resource definition and that alias of every device's state."""

    connector_id: str
    alias: str


# -- content and admin tokens --------------------------------------------------------------


class PutContent(_Op, frozen=True, gc=False):
    """Content metadata (the blob is already on disk), replacing an item of the same id,
    with an optional event.  Result: the SHA-256 of a blob no item references any more
    (the caller deletes it), or None."""

    connector_id: str
    content_id: str
    sha256: str
    size: int
    content_type: str
    description: str
    tags: dict[str, str]
    updated: int
    event: AppendEvent | None = None


class DeleteContent(_Op, frozen=True, gc=False):
    """Refuses ``NotFound``.  Result: as :class:`PutContent`."""

    connector_id: str
    content_id: str


class CreateAdminToken(_Op, frozen=True, gc=False):
    """An extra admin token (stored as its SHA-256 only)."""

    token_id: str
    name: str
    token_hash: str
    created: int


class RevokeAdminToken(_Op, frozen=True, gc=False):
    """Refuses ``NotFound``."""

    token_id: str


# -- integrations --------------------------------------------------------------------------


class CreateIntegration(_Op, frozen=True, gc=False):
    """Refuses ``AlreadyExists``."""

    record: IntegrationRecord


class UpdateIntegration(_Op, frozen=True, gc=False):
    """Replace the record of ``(record.connector_id, record.name)``.  Refuses ``NotFound``."""

    record: IntegrationRecord


class DeleteIntegration(_Op, frozen=True, gc=False):
    """The integration and its history (health, runs, asset mapping); the devices it
    created stay.  Refuses ``NotFound``."""

    connector_id: str
    name: str


class RecordHealth(_Op, frozen=True, gc=False):
    """One health probe, keeping the newest ``history`` probes.  When the state differs
    from the previous probe (or there is none) the probe is marked changed and ``on_change``
    is appended to the event log.  Result: whether it changed."""

    connector_id: str
    name: str
    timestamp: int
    healthy: bool
    status_code: int | None
    latency_ms: float
    detail: str
    on_change: AppendEvent
    history: int = 500


class StartRun(_Op, frozen=True, gc=False):
    """A job run's first report, keeping the newest ``history`` runs per job.  Result: the
    run id."""

    connector_id: str
    name: str
    job: str
    report: dict[str, Any]
    history: int = 200


class FinishRun(_Op, frozen=True, gc=False):
    """Replace a run's report."""

    run_id: int
    report: dict[str, Any]


class UpsertAsset(_Op, frozen=True, gc=False):
    """An asset seen upstream, mapped to ``identity`` (no longer vanished)."""

    connector_id: str
    name: str
    asset_id: str
    identity: str
    timestamp: int


class MarkVanished(_Op, frozen=True, gc=False):
    """Assets gone upstream."""

    connector_id: str
    name: str
    asset_ids: list[str]


Op: TypeAlias = (
    DataIn
    | AppendEvent
    | DeviceConnected
    | DeviceDisconnected
    | ResetOnline
    | DropConnections
    | NodeBeat
    | ReapNodes
    | SetValues
    | CreateDevice
    | ImportDevices
    | UpdateDevice
    | DeleteDevice
    | ActivateDevice
    | CreateConnector
    | UpdateConnector
    | DeleteConnector
    | PutResource
    | DeleteResource
    | PutContent
    | DeleteContent
    | CreateAdminToken
    | RevokeAdminToken
    | CreateIntegration
    | UpdateIntegration
    | DeleteIntegration
    | RecordHealth
    | StartRun
    | FinishRun
    | UpsertAsset
    | MarkVanished
)
"""Every write the store accepts (a tagged union: ``msgspec.msgpack.decode(b, type=list[Op])``)."""

OpResult: TypeAlias = bool | int | str | ImportOutcome | None
"""What one op returns once committed (each op's docstring says which; None when it says
nothing)."""


class CommittedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: what the event log API returns and live logs fan out."""

    connector_id: str
    seq: int
    timestamp: int
    type: str
    identity: str | None
    connection_id: str | None
    ip: str | None
    protocol: str | None
    reason: str | None
    payload: Any


class Ticket(Protocol):
    """The acknowledgement of a submission."""

    async def wait(self) -> list[OpResult]:
        """Return the ops' results once committed; raise the submission's error (a
        :class:`~gateway.errors.GatewayError`: the refusal, or ``StoreFailed``)."""
        ...

    @property
    def done(self) -> bool: ...


class Store(Protocol):
    """Typed writes (ops) in, tickets and typed reads out.  See the module docstring."""

    # -- writes ------------------------------------------------------------------------

    def submit(self, ops: Sequence[Op], *, detached: bool = False) -> Ticket:
        """Queue ``ops`` as one submission (atomic: all or none).  Never blocks.  With
        ``detached`` nobody awaits the ticket: a failure goes to ``on_failure``."""
        ...

    async def write(self, ops: Sequence[Op]) -> list[OpResult]:
        """``submit`` then wait for the commit."""
        ...

    # -- reads -------------------------------------------------------------------------

    async def stats(self) -> StoreStats:
        """A copy of the counters (cheap: no query)."""
        ...

    async def connectors(self) -> list[ConnectorRow]:
        """Every connector with its resources (read once at start)."""
        ...

    async def device(self, connector_id: str, identity: str) -> DeviceRow | None:
        """One device with its tags."""
        ...

    async def device_by_token_hash(self, connector_id: str, token_hash: str) -> TokenMatch | None:
        """The device holding a token (by its SHA-256): one indexed lookup."""
        ...

    async def list_devices(self, query: DeviceQuery) -> Page:
        """One page of devices (with tags).  Raises ``BadRequest`` for a cursor that is
        not one this store gave out."""
        ...

    async def device_counts(self, connector_id: str) -> DeviceCounts:
        """The connector's devices counted by status (a pass over them: a listing-sized
        read, about a second at a million devices)."""
        ...

    async def state(self, device_id: int, aliases: Sequence[str] | None = None) -> list[StateRow]:
        """The device's state by alias (only ``aliases`` when given)."""
        ...

    async def pending(self, device_id: int, since: int = 0) -> list[StateRow]:
        """Pending set values set after ``since`` µs, oldest first."""
        ...

    async def events(self, query: EventQuery) -> list[CommittedEvent]:
        """A connector's events after a cursor, oldest first."""
        ...

    async def last_seq(self, connector_id: str) -> int:
        """The newest sequence number of a connector's event log (0 when empty)."""
        ...

    async def content(self, connector_id: str, content_id: str) -> ContentRow | None: ...

    async def content_list(self, connector_id: str, prefix: str = "") -> list[ContentRow]:
        """Content items whose id starts with ``prefix``, by id."""
        ...

    async def admin_token_known(self, token_hash: str) -> bool: ...

    async def admin_tokens(self) -> list[AdminToken]:
        """Oldest first."""
        ...

    async def integration(self, connector_id: str, name: str) -> IntegrationRecord | None: ...

    async def integrations(self, connector_id: str | None = None) -> list[IntegrationRecord]:
        """By connector, then name; every connector's when ``connector_id`` is None."""
        ...

    async def integration_health(
        self, connector_id: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> list[HealthRow]:
        """Newest first."""
        ...

    async def integration_runs(
        self, connector_id: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunRow]:
        """Newest first."""
        ...

    async def integration_assets(self, connector_id: str, name: str) -> list[AssetRow]:
        """By asset id."""
        ...
