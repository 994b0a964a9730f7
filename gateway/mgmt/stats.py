"""Management route: a connector's live counters (``GET …/stats``), what the console's
overview and connector header show — device counts by status, open connections, values
written and refusals by reason since the gateway started.

Rates are the client's business: it samples the monotonic counters and divides by the time
between two ``timestamp`` values (``started`` changes when the gateway restarted and the
counters began again).  Device counts cost one pass over the connector's devices, so they
are computed in a reader thread and reused for :data:`COUNTS_TTL_S` across callers: a room
full of consoles polling every few seconds costs one count per interval.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.clock import now_us
from gateway.mgmt.common import Endpoint, json_response
from gateway.services.bundle import Services
from gateway.store.api import DeviceCounts

__all__ = ["COUNTS_TTL_S", "ConnectorStats", "endpoints"]

COUNTS_TTL_S = 2.0  # seconds a device count is reused


class ConnectorStats(msgspec.Struct, frozen=True):
    """Counters of one connector.  ``devices`` is current; ``connections`` is a gauge;
    ``writes`` and ``refused`` count since ``started`` (µs)."""

    connector_id: str
    timestamp: int  # µs, when the counters were read
    started: int  # µs, when the gateway started
    devices: DeviceCounts
    connections: dict[str, int]  # open device connections by protocol
    writes: int  # resource values written by devices
    writes_by_protocol: dict[str, int]
    refused: dict[str, int]  # refusals by reason (docs/protocol.md §12 item 24)


def endpoints(services: Services) -> list[Endpoint]:
    reg = services.registry
    cache: dict[str, tuple[int, DeviceCounts]] = {}  # cid -> (µs read, counts)

    async def stats(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        now = now_us()
        hit = cache.get(cid)
        if hit is None or now - hit[0] > COUNTS_TTL_S * 1e6:
            counts = await services.devices.counts(cid)
            cache[cid] = (now_us(), counts)
            for stale in [c for c in cache if reg.get(c) is None]:
                del cache[stale]
        else:
            counts = hit[1]
        m = services.metrics.connector_counts(cid)
        return json_response(
            ConnectorStats(
                connector_id=cid,
                timestamp=now_us(),
                started=int(services.started * 1e6),
                devices=counts,
                connections=m.connections,
                writes=sum(m.writes.values()),
                writes_by_protocol=m.writes,
                refused=m.refused,
            )
        )

    return [
        Endpoint(
            "GET",
            "/api/v1/connectors/{cid}/stats",
            stats,
            "Live counters: devices by status, connections, writes and refusals since start",
            "connectors",
            "getConnectorStats",
            response=ConnectorStats,
            errors=(404,),
        )
    ]
