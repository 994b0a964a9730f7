"""The web console: static files served by the management app at ``/console/``.

A dependency-free single-page client of the REST API: ``index.html``, ``style.css`` and ES
modules (``app.js`` the shell and router, one module per tab, ``lib.js`` the REST client and
DOM helpers, ``chart.js`` hand-written SVG charts).  No build step and nothing fetched from
elsewhere, so it works offline and inside the single binary.  It holds no state of its own,
so anything it shows is also reachable with the CLI and by scripts.

Every answer carries ``Cache-Control: no-cache``: the browser revalidates (ETag) on each load,
so after an upgrade no module of the old console mixes with the new ones.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["CONSOLE_DIR", "console_routes"]

CONSOLE_DIR = Path(__file__).parent / "static"


class _ConsoleFiles(StaticFiles):
    """StaticFiles whose answers must be revalidated before reuse."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def console_routes() -> list[BaseRoute]:
    """``/`` redirects to ``/console/``, which serves index.html and the files next to it."""
    return [
        Route("/", _to_console, include_in_schema=False),
        Mount("/console", _ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console"),
    ]
