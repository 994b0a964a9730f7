"""The services, bundled: what the protocol layers and the management API receive.

Built once by :mod:`gateway.app` (the composition root) and passed down; nothing here is a
module-level global.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.model import LogRecord
from gateway.services.connectors import ConnectorService, Registry
from gateway.services.content import ContentService
from gateway.services.control import ControlHub
from gateway.services.devices import DeviceService
from gateway.services.events import EventLog
from gateway.services.logs import LogHub
from gateway.services.state import StateService
from gateway.store.api import CommittedEvent, Store
from gateway.tls.contexts import ConnectorTLS

if TYPE_CHECKING:
    from gateway.services.integrations import IntegrationService

__all__ = ["Directory", "Services"]


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
        )

    def tls_for_server_name(self, server_name: str) -> ConnectorTLS | None:
        found = self.registry.connector_for_host(server_name)
        if found is None or found[1]:  # devmode names are plain HTTP only
            return None
        return self._tls(found[0].id)

    def tls_for_connector(self, connector_id: str) -> ConnectorTLS | None:
        return self._tls(connector_id)


class Services:
    # Attached by the composition root (they depend on Services themselves).
    integrations: IntegrationService

    def __init__(
        self, config: GatewayConfig, store: Store, *, logs: LogHub, control: ControlHub
    ) -> None:
        self.config = config
        self.store = store
        self.logs = logs
        self.control = control
        self.registry = Registry(config.base_domain)
        self.directory = Directory(self.registry)
        self.connectors = ConnectorService(store, self.registry)
        self.devices = DeviceService(store, self.registry)
        self.state = StateService(store, self.registry, control)
        self.events = EventLog(store, self.registry)
        self.content = ContentService(store, self.registry, config.data_dir / "content")
        self.started = time.time()
        self.admin_token = ""  # set by the composition root from DIR/admin.token
        self.metrics = Metrics()

    def on_events(self, events: Sequence[CommittedEvent]) -> None:
        """The store's post-commit fan-out (Trio thread)."""
        self.events.on_commit(events)
        self.logs.publish_events(events)

    def debug(self, rec: LogRecord) -> None:
        self.logs.publish(rec)
