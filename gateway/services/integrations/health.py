"""Health probes: a GET of ``x-exosite-health-path`` (default ``basePath``); 2xx = healthy.

Every probe is kept (bounded history).  A change of state — including the first probe —
appends an ``integration_health`` event to the connector's durable event log and publishes
a live-log line, so operators following ``logs`` or the event log see an API go red or
green as it happens.
"""

from __future__ import annotations

import logging
import time
import urllib.parse

import httpx

from gateway.clock import now_us
from gateway.model import LogRecord
from gateway.services.integrations import storage
from gateway.services.integrations.bound import Bound
from gateway.services.integrations.context import Collaborators
from gateway.services.integrations.models import HealthCheck
from gateway.services.integrations.operations import make_client, transport_error
from gateway.store.api import AppendEvent, EventMeta

__all__ = ["HEALTH_EVENT", "probe", "run_health_check"]

log = logging.getLogger(__name__)

HEALTH_EVENT = "integration_health"


async def probe(bound: Bound) -> tuple[bool, int | None, float, str]:
    """One GET of the health URL: (healthy, status, latency ms, detail).  Never raises for
    network trouble: being unreachable is an answer (unhealthy)."""
    url = bound.base() + bound.spec.health_path
    shown = urllib.parse.urlsplit(url).path
    headers = {"Accept": "application/json"}
    started = time.monotonic()
    async with make_client(
        ca_bundle=bound.settings.ca_bundle, timeout_s=bound.settings.timeout_s
    ) as client:
        try:
            resp = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            failed = transport_error(f"GET {shown}", exc, client, url, bound.secrets())
            return False, None, (time.monotonic() - started) * 1000, failed.message
    latency = (time.monotonic() - started) * 1000
    healthy = 200 <= resp.status_code < 300
    return healthy, resp.status_code, latency, f"GET {shown} answered {resp.status_code}"


async def run_health_check(service: Collaborators, bound: Bound) -> HealthCheck:
    """Probe, store the result and report a change on the event log and live log."""
    healthy, status, latency, detail = await probe(bound)
    cid, name = bound.connector_id, bound.name
    ts = now_us()

    check = await storage.record_health(
        service.store,
        cid,
        name,
        timestamp=ts,
        healthy=healthy,
        status_code=status,
        latency_ms=round(latency, 3),
        detail=detail,
        on_change=AppendEvent(
            cid,
            HEALTH_EVENT,
            None,
            EventMeta(protocol="c2c"),
            ts,
            {"integration": name, "healthy": healthy, "status": status, "detail": detail},
            reason="healthy" if healthy else "unhealthy",
        ),
    )
    if check.changed:
        log.info(
            "integration %s/%s is %s: %s", cid, name, "healthy" if healthy else "unhealthy", detail
        )
        service.debug(
            LogRecord(
                kind="debug",
                timestamp=ts,
                connector_id=cid,
                ip=None,
                protocol="c2c",
                event=HEALTH_EVENT,
                reason="healthy" if healthy else "unhealthy",
                detail=f"integration {name}: {detail}",
            )
        )
    return check
