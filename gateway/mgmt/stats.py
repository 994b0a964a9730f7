"""Management route: a connector's live counters (``GET …/stats``), what the console's
overview and connector header show — device counts by status, open connections, values
written and refusals by reason since the gateway started.

Rates are the client's business: it samples the monotonic counters and divides by the time
between two ``timestamp`` values (``started`` changes when the gateway restarted and the
counters began again).  Device counts cost one pass over the connector's devices (about a
second at a million devices), so they are computed in a reader thread and reused across
callers for :data:`COUNTS_TTL_S`, or :data:`COUNTS_COST_FACTOR` times what the last count took
if that is longer: however many consoles poll, counting takes at most a tenth of a reader
thread, and a big connector's counts are a few seconds old.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.clock import now_us
from gateway.mgmt.common import Endpoint, json_response
from gateway.services.bundle import Services
from gateway.store.api import DeviceCounts

__all__ = ["COUNTS_COST_FACTOR", "COUNTS_TTL_S", "ConnectorStats", "endpoints"]

COUNTS_TTL_S = 2.0  # seconds a device count is reused, at least
COUNTS_COST_FACTOR = 10  # ... or this many times the time the count took


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
    cache: dict[str, tuple[int, DeviceCounts]] = {}  # cid -> (µs valid until, counts)

    async def stats(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        hit = cache.get(cid)
        if hit is None or now_us() > hit[0]:
            started = now_us()
            counts = await services.devices.counts(cid)
            done = now_us()
            reuse = max(COUNTS_TTL_S * 1e6, COUNTS_COST_FACTOR * (done - started))
            cache[cid] = (done + int(reuse), counts)
            for stale in [c for c in cache if reg.get(c) is None]:
                del cache[stale]
        else:
            counts = hit[1]
        families, _sessions, _records = await services.node_families()  # every process
        m = families.connector_counts(cid)
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
