"""The bus seam: what crosses connections, and so processes (docs/architecture.md "The bus").

``api.py`` is the interface the services use (:class:`~gateway.bus.api.Bus`) with the
single-process implementation; ``frames.py`` the node's wire format; ``hub.py`` the store
owner's end of the node bus; ``client.py`` a worker's end, with the
:class:`~gateway.bus.client.RemoteStore` that sends its writes to the store owner.
"""

from __future__ import annotations

from gateway.bus.api import WORKER_EVENT_TYPES, Bus, LocalBus, MetricsSnapshot

__all__ = ["WORKER_EVENT_TYPES", "Bus", "LocalBus", "MetricsSnapshot"]
