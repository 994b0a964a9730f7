"""Management REST API (v1): the contract in ARCHITECTURE.md that the CLI, the console and
external scripts use.  This module is the Starlette application; routes live by concern in
``gateway/api/``."""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__
from gateway._impl import implementation
from gateway.services.bundle import Services

__all__ = ["create_app"]


def create_app(services: Services) -> Starlette:
    async def health(request: Request) -> Response:
        body = {
            "status": "ok",
            "version": __version__,
            "compiled": implementation() == "compiled",
            "implementation": implementation(),
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    return Starlette(routes=[Route("/api/v1/health", health)])
