"""The bus interface: what one process tells the others of its node (or, later, cluster).

Theory of operation
-------------------
Everything that crosses device connections crosses processes in a multi-process node
(docs/architecture.md "The node"): a value set through the management API must reach the
device on whichever worker holds it, a second connection of an identity on another worker
closes the first, a lock drops the device's sessions wherever they are, and the live log and
``/metrics`` show the whole node.  All of that rides on four kinds of message:

* **committed events** (:class:`~gateway.store.api.CommittedEvent`), published by the process
  that owns the store right after each commit.  Every process derives its own reactions from
  them (pushes of set values from ``data_out``, kicks from ``locked``/``deleted``/
  ``reprovision``, ``duplicate_connection`` from ``connect``); nothing else announces a
  change, so nothing can be announced that could still be lost.  Workers receive only
  :data:`WORKER_EVENT_TYPES`: ``data_in`` is most of the traffic and no worker needs it.
* **registry changes** (a connector or its resources changed: every process re-reads it),
  and **certificate reloads** (``POST /api/v1/tls/reload``: every worker re-reads the node
  certificate; SIGHUP reaches every process from the supervisor instead);
* **debug-log records**, forwarded from where they happen to where someone watches, and
  only while someone does (:meth:`Bus.want_logs` flows the other way);
* **metrics snapshots** of the other processes (:meth:`Bus.peer_metrics`).

The services see only :class:`Bus`.  What a bus delivers into a process goes through the
composition root's inbox (``gateway.app``), so the services never learn which bus they run
on.  Implementations: :class:`LocalBus` (one process: there is nobody to tell, every call is
a no-op), the node bus (``hub.py`` in the store owner, ``client.py`` in each worker; Unix
socket, msgspec frames), and later a NATS one for clusters (JetStream for committed events,
core subjects for the rest) behind the same methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from gateway.metrics import Labels, Metrics
from gateway.model import LogRecord
from gateway.store.api import CommittedEvent

__all__ = ["WORKER_EVENT_TYPES", "Bus", "Inbox", "LocalBus", "MetricsSnapshot"]

WORKER_EVENT_TYPES = frozenset({"data_out", "connect", "locked", "deleted", "reprovision"})
"""The committed event types a device-serving process reacts to (pushes, kicks)."""


class MetricsSnapshot(msgspec.Struct, frozen=True, gc=False):
    """One process's counters and gauges: every :class:`~gateway.metrics.Metrics` family
    (by its attribute name, so a family added there travels without a change here) plus
    the few single values kept outside them; summed by the management process."""

    process: str  # "worker-1"...
    families: dict[str, list[tuple[Labels, int]]] = msgspec.field(default_factory=dict)
    mqtt_sessions: int = 0
    log_records: int = 0

    @classmethod
    def of(
        cls, process: str, m: Metrics, *, mqtt_sessions: int, log_records: int
    ) -> MetricsSnapshot:
        families = {name: list(getattr(m, name).items()) for name in Metrics.__slots__}
        return cls(process, families, mqtt_sessions, log_records)

    def add_to(self, m: Metrics) -> None:
        """Add these values into ``m`` (a scratch :class:`Metrics` being summed)."""
        for name, values in self.families.items():
            if name not in Metrics.__slots__:
                continue  # a family a newer process has and this one does not
            family = getattr(m, name)
            for labels, v in values:
                family[tuple(tuple(p) for p in labels)] += v

    def counters_only(self) -> MetricsSnapshot:
        """The monotonic part (what a dead process leaves behind): gauges dropped."""
        families = {k: v for k, v in self.families.items() if k not in GAUGE_FAMILIES}
        return msgspec.structs.replace(self, families=families, mqtt_sessions=0)

    def plus(self, other: MetricsSnapshot) -> MetricsSnapshot:
        """Both snapshots summed (label sets merged)."""
        m = Metrics()
        self.add_to(m)
        other.add_to(m)
        return MetricsSnapshot.of(
            self.process,
            m,
            mqtt_sessions=self.mqtt_sessions + other.mqtt_sessions,
            log_records=self.log_records + other.log_records,
        )


GAUGE_FAMILIES = frozenset({"connections", "password_cache_entries"})
"""The :class:`~gateway.metrics.Metrics` families that are gauges (not kept for the dead)."""


class Bus(Protocol):
    """What the services publish to the other processes, and ask of them.  Every method but
    :meth:`peer_metrics` is called in the Trio thread and never blocks: a message that
    cannot go now is queued or, for a peer that is gone, dropped (a peer that comes back
    re-reads what it needs: the registry from the store, interest from the hub)."""

    def publish_events(self, events: Sequence[CommittedEvent]) -> None:
        """Committed events, in commit order (called by the store owner's ``on_events``)."""
        ...

    def publish_registry(self, connector_id: str) -> None:
        """A connector or its resources changed (committed): every process re-reads it."""
        ...

    def publish_log(self, record: LogRecord) -> None:
        """A debug-log record for the live-log subscribers elsewhere (only sent while
        :attr:`logs_wanted`)."""
        ...

    def publish_tls_reload(self) -> None:
        """The node certificate on disk was reloaded here (``POST /api/v1/tls/reload``):
        every process serving devices re-reads it."""
        ...

    def want_logs(self, active: bool) -> None:
        """This process has (or no longer has) live-log subscribers."""
        ...

    @property
    def logs_wanted(self) -> bool:
        """Whether a live-log subscriber elsewhere wants this process's debug records."""
        ...

    async def peer_metrics(self) -> list[MetricsSnapshot]:
        """Fresh snapshots of the other processes (each answers within a second or is
        represented by its last snapshot), plus one for the processes that have died (their
        counters, so totals never go down)."""
        ...


class Inbox(Protocol):
    """What a bus delivers into a device-serving process (the composition root builds it
    over that process's services)."""

    def events(self, events: Sequence[CommittedEvent]) -> None:
        """Committed events of :data:`WORKER_EVENT_TYPES`, in commit order."""
        ...

    async def registry_changed(self, connector_id: str | None) -> None:
        """Re-read connector ``connector_id`` (None: all of them, after a reconnect that
        may have missed changes)."""
        ...

    async def reload_tls(self) -> None:
        """Re-read the node certificate from ``DIR/tls`` (a failure keeps the old one)."""
        ...

    def snapshot(self) -> MetricsSnapshot:
        """This process's metrics, now."""
        ...


class LocalBus:
    """The bus of a single-process gateway (``--workers 1``, the in-process tests): the
    committed events are already fanned out where they happen, so nothing is sent."""

    def publish_events(self, events: Sequence[CommittedEvent]) -> None:
        return None

    def publish_registry(self, connector_id: str) -> None:
        return None

    def publish_log(self, record: LogRecord) -> None:
        return None

    def publish_tls_reload(self) -> None:
        return None

    def want_logs(self, active: bool) -> None:
        return None

    @property
    def logs_wanted(self) -> bool:
        return False

    async def peer_metrics(self) -> list[MetricsSnapshot]:
        return []
