"""Management REST API (v1): the contract in docs/architecture.md that the CLI, the console and
external scripts use.  This module assembles the Starlette application; routes live by
concern in ``gateway/api/mgmt_*.py`` and are declared as :class:`Endpoint` values, from
which both the router and the OpenAPI document are built.

Authentication: every route needs ``Authorization: Bearer <token>`` (the data directory's
admin token or one from ``POST /api/v1/tokens``) except

* ``GET /api/v1/health`` (liveness probes carry no secrets),
* ``GET /api/v1/openapi.json`` (the contract is public), and
* ``GET /metrics`` from a loopback address (the API binds 127.0.0.1 by default, where a
  local Prometheus scrapes it); from any other address ``/metrics`` needs the token too.

Errors, including unknown routes (404) and methods (405), are ``{"error", "message"}``.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
import trio
from prometheus_client import Histogram as PromHistogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway import __version__
from gateway._impl import implementation
from gateway.metrics import Sample
from gateway.mgmt import connectors as mgmt_connectors
from gateway.mgmt import content as mgmt_content
from gateway.mgmt import devices as mgmt_devices
from gateway.mgmt import events as mgmt_events
from gateway.mgmt import integrations
from gateway.mgmt import stats as mgmt_stats
from gateway.mgmt import tls as mgmt_tls
from gateway.mgmt.common import (
    AdminTokens,
    Endpoint,
    ErrorBody,
    is_loopback,
    json_response,
    make_dispatcher,
)
from gateway.mgmt.console import console_routes
from gateway.mgmt.exporter import (
    CONTENT_TYPE,
    NodeCollector,
    exposition,
    request_histogram,
    store_histograms,
)
from gateway.mgmt.openapi import build_document
from gateway.services.bundle import Services
from gateway.tls.contexts import ServerContexts

__all__ = ["Health", "create_app", "endpoints"]

# The router hands every method to our dispatcher, which answers 405 in the error shape.
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


class Health(msgspec.Struct, frozen=True):
    status: str
    version: str
    compiled: bool
    implementation: str


class _Process(msgspec.Struct):
    restarts: int = 0
    crash_loop: bool = False


class _RunProcesses(msgspec.Struct):
    processes: list[_Process] = msgspec.field(default_factory=list)


async def _process_samples(services: Services) -> list[Sample]:
    """Restarts and crash loops of the node's processes, as the supervisor reports them in
    ``DIR/run.json`` (docs/architecture.md "The node"); nothing for a single process."""
    try:
        raw = await trio.Path(services.config.data_dir / "run.json").read_bytes()
        procs = msgspec.json.decode(raw, type=_RunProcesses).processes
    except (OSError, msgspec.DecodeError):
        return []
    if not procs:
        return []
    return [
        Sample(
            "gateway_process_restarts_total",
            "counter",
            "Restarts of the node's store owner and workers by the supervisor.",
            sum(p.restarts for p in procs),
        ),
        Sample(
            "gateway_processes_crash_looping",
            "gauge",
            "Processes the supervisor restarts with back-off (quick exits in a row).",
            sum(p.crash_loop for p in procs),
        ),
    ]


def endpoints(
    services: Services,
    tokens: AdminTokens,
    tls: ServerContexts | None = None,
    request_times: PromHistogram | None = None,
) -> list[Endpoint]:
    """Every route of the API (the OpenAPI document describes exactly these).  The TLS
    routes and the certificate expiry metric exist when ``tls`` (the device ports'
    contexts) is given; ``request_times`` (the dispatchers' histogram) is exported with
    ``/metrics``."""
    request_times = request_times if request_times is not None else request_histogram()

    async def health(request: Request) -> Response:
        impl = implementation()
        return json_response(Health("ok", __version__, impl == "compiled", impl))

    async def metrics(request: Request) -> Response:
        if not is_loopback(request):
            await tokens.check(request)
        families, samples = await services.node_metrics()  # every process of the node
        node = NodeCollector(
            families,
            [*samples, *await _process_samples(services)],
            store_histograms(await services.store.stats()),
            [mgmt_tls.certificate_expiry(services, tls)] if tls is not None else [],
            connectors=frozenset(c.id for c in services.registry.all()),
        )
        return Response(exposition(node, request_times), media_type=CONTENT_TYPE)

    eps = [
        Endpoint(
            "GET",
            "/api/v1/health",
            health,
            "Liveness and implementation",
            "meta",
            "health",
            response=Health,
            errors=(),
            auth=False,
        ),
        Endpoint(
            "GET",
            "/metrics",
            metrics,
            "Prometheus metrics (no token needed from a loopback address)",
            "meta",
            "metrics",
            response_media={CONTENT_TYPE.split(";")[0]: {"type": "string"}},
            errors=(),
            auth=False,
        ),
        *mgmt_connectors.endpoints(services),
        *mgmt_stats.endpoints(services),
        *mgmt_devices.endpoints(services),
        *mgmt_content.endpoints(services),
        *mgmt_events.endpoints(services, tokens),
        *integrations.endpoints(services),
        *(mgmt_tls.endpoints(services, tls) if tls is not None else []),
    ]
    doc_body: list[bytes] = []

    async def openapi(request: Request) -> Response:
        return Response(doc_body[0], media_type="application/json")

    eps.insert(
        1,
        Endpoint(
            "GET",
            "/api/v1/openapi.json",
            openapi,
            "This document",
            "meta",
            "openapi",
            response_media={"application/json": {"type": "object"}},
            errors=(),
            auth=False,
        ),
    )
    doc_body.append(msgspec.json.encode(build_document(eps)))
    return eps


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route matched) in the error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "error")
    message = f"no route for {request.method} {request.url.path}" if status == 404 else str(exc)
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return json_response(ErrorBody(code, message), status, headers)


class _NoLifespan:
    """The app without Starlette's lifespan handling: we have no startup work, and
    Starlette reports a cancelled lifespan (our normal shutdown: the nursery is cancelled)
    as ``lifespan.shutdown.failed``, which hypercorn raises as an error."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    services: Services, *, admin_token: str, tls: ServerContexts | None = None
) -> _NoLifespan:
    """The management API over ``services``; ``admin_token`` is the data directory's token
    (``DIR/admin.token``), accepted beside the extra tokens the store keeps; ``tls`` (the
    device ports' contexts) adds the certificate routes and the expiry metric."""
    tokens = AdminTokens(services.store, admin_token)
    request_times = request_histogram()
    grouped: defaultdict[str, list[Endpoint]] = defaultdict(list)
    for ep in endpoints(services, tokens, tls, request_times):
        grouped[ep.path].append(ep)
    # Fixed paths before templated ones so ".../devices/import" is not read as an identity.
    order = sorted(grouped, key=lambda p: ("{" in p, p))
    routes: list[BaseRoute] = [
        Route(path, make_dispatcher(grouped[path], tokens, request_times), methods=ALL_METHODS)
        for path in order
    ]
    routes += console_routes()
    return _NoLifespan(Starlette(routes=routes, exception_handlers={HTTPException: _http_error}))
