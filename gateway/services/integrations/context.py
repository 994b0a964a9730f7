"""What the health probes and the asset jobs need from the integration service, as a
protocol: they receive the service itself, without importing it (no import cycle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.model import LogRecord
from gateway.services.connectors import Registry
from gateway.services.devices import DeviceService
from gateway.services.state import StateService
from gateway.store.api import Store

__all__ = ["Collaborators"]


class Collaborators(Protocol):
    """The integration service's collaborators (:class:`IntegrationService` has them)."""

    store: Store
    registry: Registry
    devices: DeviceService
    state: StateService
    debug: Callable[[LogRecord], None]
