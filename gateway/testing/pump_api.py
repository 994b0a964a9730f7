"""A pump-fleet REST API for integration tests: the Exosite c2c article's example API.

Serves ``/api/v1.0/health``, ``/assets``, ``/assets/{id}`` and ``/assets/{id}/state`` over
HTTPS (a ``trustme`` certificate for 127.0.0.1 / localhost) with hypercorn's Trio worker on
an ephemeral 127.0.0.1 port, in a basic-auth or a token (``?token=``) variant.  Tests steer
it: :meth:`PumpFleet.remove_asset`, :meth:`PumpFleet.throttle` (answer 429 with Retry-After
the next N times), :meth:`PumpAPI.stop` (close the port: health goes red).  Its OpenAPI 2
documents are ``tests/data/pump-fleet-basic.yaml`` and ``pump-fleet-token.yaml``.
"""

from __future__ import annotations

import base64
import hmac
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import trio
import trustme
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["BASE_PATH", "PumpAPI", "PumpFleet", "open_pump_api"]

BASE_PATH = "/api/v1.0"
USERNAME = "fleet-operator"
PASSWORD = "s3cret-Pump-Passw0rd-7f1c"  # distinctive: tests grep logs and the DB for it
TOKEN = "tok-9b2f4c1e8d7a6b5c4d3e2f1a0b9c8d7e"


class PumpFleet:
    """The API's data and its test controls (Trio thread only)."""

    def __init__(self, *, auth: Literal["basic", "token"] = "basic", assets: int = 3) -> None:
        self.auth = auth
        self.username, self.password, self.token = USERNAME, PASSWORD, TOKEN
        self.assets: dict[str, dict[str, Any]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        for i in range(1, assets + 1):
            self.add_asset(f"pump-{i:03d}", site="north" if i % 2 else "south")
        self.throttled = 0
        self.retry_after = "1"
        self.requests: list[tuple[str, str]] = []  # (path, query) of every request seen

    def add_asset(self, asset_id: str, *, site: str = "north") -> None:
        n = len(self.assets) + 1
        self.assets[asset_id] = {
            "id": asset_id,
            "name": f"Pump {asset_id}",
            "site": site,
            "model": "PX-200",
        }
        self.states[asset_id] = {
            "temperature": 20.0 + n / 2,
            "battery": 100 - n,
            "vibration": round(0.01 * n, 3),
            "readings": [1.0, 2.0],
        }

    def remove_asset(self, asset_id: str) -> None:
        del self.assets[asset_id]
        del self.states[asset_id]

    def throttle(self, times: int = 1, *, retry_after: str = "1") -> None:
        """The next ``times`` asset requests answer 429 with this Retry-After."""
        self.throttled = times
        self.retry_after = retry_after

    def _authorized(self, request: Request) -> bool:
        if self.auth == "token":
            return hmac.compare_digest(request.query_params.get("token", ""), self.token)
        header = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return hmac.compare_digest(header, expected)

    def app(self) -> Starlette:
        async def guard(request: Request) -> Response | None:
            self.requests.append((request.url.path, request.url.query))
            if not self._authorized(request):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            if self.throttled > 0:
                self.throttled -= 1
                return JSONResponse(
                    {"error": "slow down"},
                    status_code=429,
                    headers={"Retry-After": self.retry_after},
                )
            return None

        async def health(request: Request) -> Response:
            self.requests.append((request.url.path, request.url.query))
            return JSONResponse({"status": "ok"})

        async def assets(request: Request) -> Response:
            return await guard(request) or JSONResponse(list(self.assets.values()))

        async def asset(request: Request) -> Response:
            refused = await guard(request)
            if refused is not None:
                return refused
            found = self.assets.get(request.path_params["id"])
            if found is None:
                return JSONResponse({"error": "no such asset"}, status_code=404)
            return JSONResponse(found)

        async def state(request: Request) -> Response:
            refused = await guard(request)
            if refused is not None:
                return refused
            found = self.states.get(request.path_params["id"])
            if found is None:
                return JSONResponse({"error": "no such asset"}, status_code=404)
            return JSONResponse(found)

        return Starlette(
            routes=[
                Route(f"{BASE_PATH}/health", health),
                Route(f"{BASE_PATH}/assets", assets),
                Route(f"{BASE_PATH}/assets/{{id}}", asset),
                Route(f"{BASE_PATH}/assets/{{id}}/state", state),
            ]
        )


class PumpAPI:
    """A running pump API: where it listens, the CA that signed it, how to stop it."""

    def __init__(
        self, fleet: PumpFleet, port: int, ca_pem: str, scope: trio.CancelScope, stopped: trio.Event
    ) -> None:
        self.fleet = fleet
        self.port = port
        self.ca_pem = ca_pem
        self._scope = scope
        self._stopped = stopped

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop serving and close the port (new connections are refused)."""
        self._scope.cancel()
        await self._stopped.wait()


@asynccontextmanager
async def open_pump_api(
    workdir: Path, *, auth: Literal["basic", "token"] = "basic", assets: int = 3
) -> AsyncIterator[PumpAPI]:
    """Serve a pump fleet over HTTPS on an ephemeral 127.0.0.1 port until the block ends."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = workdir / "pump-cert.pem", workdir / "pump-key.pem"

    def write_files() -> None:  # hypercorn loads the certificate from files
        workdir.mkdir(parents=True, exist_ok=True)
        cert.private_key_pem.write_to_path(str(keyfile))
        certfile.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))

    await trio.to_thread.run_sync(write_files)
    fleet = PumpFleet(auth=auth, assets=assets)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    cfg = HypercornConfig()
    # hypercorn adopts the descriptor (and closes it when it stops serving)
    cfg.bind = [f"fd://{sock.detach()}"]
    cfg.certfile, cfg.keyfile = str(certfile), str(keyfile)
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 0.1
    stopped = trio.Event()
    scope = trio.CancelScope()

    async def run() -> None:
        try:
            with scope:
                await serve(fleet.app(), cfg, mode="asgi")  # type: ignore[arg-type]
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        api = PumpAPI(fleet, port, ca.cert_pem.bytes().decode(), scope, stopped)
        try:
            yield api
        finally:
            scope.cancel()
