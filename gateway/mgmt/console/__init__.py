"""The web console: static files served by the management app at ``/console/``.

A dependency-free single-page client of the REST API (``app.js``); it holds no state of
its own, so anything it shows is also reachable with the CLI and by scripts."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["CONSOLE_DIR", "console_routes"]

CONSOLE_DIR = Path(__file__).parent / "static"


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def console_routes() -> list[BaseRoute]:
    """``/`` redirects to ``/console/``, which serves index.html, app.js and style.css."""
    return [
        Route("/", _to_console, include_in_schema=False),
        Mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console"),
    ]
