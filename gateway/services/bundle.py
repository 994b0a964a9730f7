"""The services, bundled: what the protocol layers and the management API receive.

Built once by the composition root (:mod:`gateway.app`) with every collaborator it needs
and passed down; nothing here is a module-level global and nothing is attached later.
The hubs that must exist before the store (the connector registry, the live-log hub, the
long-poll signals and the control hub, which the store's ``on_events`` feeds; the metrics)
are created by the composition root and passed in, with the bus (``gateway/bus/api.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.bus.api import Bus, MetricsSnapshot
from gateway.config import GatewayConfig
from gateway.metrics import Metrics, Sample
from gateway.model import LogRecord
from gateway.services.connectors import ConnectorService, Registry
from gateway.services.content import ContentService
from gateway.services.control import ControlHub
from gateway.services.devices import DeviceService, PasswordCache
from gateway.services.events import CommitSignals, EventLog
from gateway.services.integrations import IntegrationService
from gateway.services.logs import LogHub
from gateway.services.refusals import REFUSAL_EVENTS, RefusalEvents
from gateway.services.secretbox import SecretBox
from gateway.services.state import StateService
from gateway.store.api import CommittedEvent, Store
from gateway.tls.contexts import ConnectorTLS

__all__ = ["Directory", "Services", "committed_fanout"]


def committed_fanout(
    signals: CommitSignals, logs: LogHub, control: ControlHub, passwords: PasswordCache
) -> Callable[[Sequence[CommittedEvent]], None]:
    """What committed events do in this process (Trio thread, after each commit, or as the
    bus delivers them in a worker): wake the event-log long-polls of the connectors
    concerned, feed the live logs, push set values and kick sessions (``control.py``), drop
    the password proofs of devices locked, deleted or revoked (``devices/passwords.py``)."""

    def on_events(events: Sequence[CommittedEvent]) -> None:
        signals.on_commit(events)
        logs.publish_events(events)
        control.on_events(events)
        passwords.on_events(events)

    return on_events


class Directory:
    """The front door's view of connectors (gateway.tls.contexts.ConnectorDirectory),
    answered from the in-memory registry: it runs inside the TLS handshake."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _tls(self, cid: str) -> ConnectorTLS | None:
        c = self.registry.get(cid)
        if c is None:
            return None
        pki = c.settings.pki
        return ConnectorTLS(
            connector_id=c.id,
            client_ca_pem=pki.client_ca if pki.enabled else None,
            server_cert_pem=pki.server_cert,
            server_key_pem=pki.server_key,
            devmode=c.settings.protocol.devmode,
            policy=c.settings.tls,
        )

    def tls_for_server_name(self, server_name: str) -> ConnectorTLS | None:
        found = self.registry.connector_for_host(server_name)
        if found is None or found[1]:  # devmode names are plain HTTP only
            return None
        return self._tls(found[0].id)

    def tls_for_connector(self, connector_id: str) -> ConnectorTLS | None:
        return self._tls(connector_id)


class Services:
    """Every domain service over one store.  ``registry``, ``logs``, ``control``,
    ``signals``, ``passwords``, ``metrics`` and ``bus`` are the composition root's (the
    store's callbacks, or the bus's deliveries, already point at the hubs).  ``process``
    names this process in metrics snapshots (``gateway`` alone, ``store`` or ``worker-N``
    in a node)."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        *,
        registry: Registry,
        logs: LogHub,
        control: ControlHub,
        signals: CommitSignals,
        passwords: PasswordCache,
        metrics: Metrics,
        bus: Bus,
        process: str = "gateway",
    ) -> None:
        self.config = config
        self.store = store
        self.logs = logs
        self.control = control
        self.metrics = metrics
        self.bus = bus
        self.process = process
        self.registry = registry
        self.directory = Directory(self.registry)
        box = SecretBox.from_data_dir(config.data_dir)  # the node's key for secrets at rest
        self.connectors = ConnectorService(
            store, self.registry, box=box, on_change=bus.publish_registry
        )
        self.devices = DeviceService(store, self.registry, passwords)
        self.state = StateService(store, self.registry)
        self.events = EventLog(store, self.registry, signals)
        self.content = ContentService(store, self.registry, config.data_dir / "content")
        self.integrations = IntegrationService(
            store,
            self.registry,
            self.devices,
            self.state,
            debug=logs.publish,
            box=box,
        )
        self.refusals = RefusalEvents()
        self.started = time.time()

    def debug(self, rec: LogRecord) -> None:
        """A debug-log record (Trio thread).  A refusal of a known connector is also
        counted per reason (the connector's live counters, ``GET …/stats``) and becomes a
        durable event (:mod:`gateway.services.refusals`; not awaited: a refusal
        acknowledges nothing, and a failure reaches the store's ``on_failure``)."""
        if rec.event in REFUSAL_EVENTS and rec.connector_id is not None:
            if rec.reason:
                self.metrics.connector_refusal(rec.connector_id, rec.reason)
            event = self.refusals.event_for(rec)
            if event is not None:
                self.store.submit([event], detached=True)
        self.logs.publish(rec)

    def snapshot(self) -> MetricsSnapshot:
        """This process's counters for the node's ``/metrics`` (asked over the bus); a
        deleted connector's series are dropped first (Metrics.retain_connectors)."""
        self.metrics.retain_connectors({c.id for c in self.registry.all()})
        return MetricsSnapshot.of(
            self.process,
            self.metrics,
            mqtt_sessions=self.control.session_count,
            log_records=self.logs.published,
        )

    async def node_metrics(self) -> tuple[Metrics, list[Sample]]:
        """``/metrics`` of the whole node: this process's families plus every other
        process's (over the bus; one process alone: its own), and the single values."""
        total, sessions, records = await self.node_families()
        return total, await self.samples(mqtt_sessions=sessions, log_records=records)

    async def node_families(self) -> tuple[Metrics, int, int]:
        """The :class:`Metrics` families summed over the node's processes, with the MQTT
        sessions and live-log records (one process alone: its own, not copied)."""
        peers = await self.bus.peer_metrics()
        if not peers:
            self.metrics.retain_connectors({c.id for c in self.registry.all()})
            return self.metrics, self.control.session_count, self.logs.published
        total = Metrics()
        mine = self.snapshot()
        mine.add_to(total)
        for snap in peers:
            snap.add_to(total)
        sessions = mine.mqtt_sessions + sum(p.mqtt_sessions for p in peers)
        records = mine.log_records + sum(p.log_records for p in peers)
        return total, sessions, records

    async def samples(
        self, *, mqtt_sessions: int | None = None, log_records: int | None = None
    ) -> list[Sample]:
        """The single-value metrics of ``/metrics`` beside :attr:`metrics`' families: the
        store's counters (kept by the store, no query), sessions, live logs, uptime."""
        st = await self.store.stats()
        if mqtt_sessions is None:
            mqtt_sessions = self.control.session_count
        if log_records is None:
            log_records = self.logs.published
        return [
            Sample(
                "gateway_store_commits_total",
                "counter",
                "Store transactions committed.",
                st.commits,
            ),
            Sample(
                "gateway_store_submissions_total",
                "counter",
                "Submissions committed.",
                st.submissions,
            ),
            Sample(
                "gateway_store_failed_submissions_total",
                "counter",
                "Submissions rolled back.",
                st.failed_submissions,
            ),
            Sample(
                "gateway_store_last_batch",
                "gauge",
                "Submissions in the last commit.",
                st.last_batch,
            ),
            Sample(
                "gateway_store_max_batch", "gauge", "Largest group commit so far.", st.max_batch
            ),
            Sample(
                "gateway_store_commit_seconds_total",
                "counter",
                "Time spent committing.",
                st.commit_seconds_total,
            ),
            Sample("gateway_store_events_total", "counter", "Events appended.", st.events),
            Sample(
                "gateway_mqtt_sessions",
                "gauge",
                "MQTT sessions registered for control pushes.",
                mqtt_sessions,
            ),
            Sample(
                "gateway_log_records_total",
                "counter",
                "Live-log records published.",
                log_records,
            ),
            Sample(
                "gateway_log_subscribers",
                "gauge",
                "Live-log subscribers.",
                self.logs.subscriber_count,
            ),
            Sample(
                "gateway_log_dropped_subscribers_total",
                "counter",
                "Live-log subscribers dropped for being slow.",
                self.logs.dropped_subscribers,
            ),
            Sample("gateway_devices", "gauge", "Device identities (all connectors).", st.devices),
            Sample(
                "gateway_event_log_size",
                "gauge",
                "Events kept in the durable log.",
                st.event_log_size,
            ),
            Sample(
                "gateway_pending_values",
                "gauge",
                "Set values not yet acknowledged.",
                st.pending_values,
            ),
            Sample("gateway_connectors", "gauge", "Connectors.", len(self.registry.all())),
            Sample(
                "gateway_uptime_seconds",
                "gauge",
                "Seconds since start.",
                round(time.time() - self.started, 3),
            ),
        ]
