"""A pump-fleet REST API for integration tests: the Exosite c2c article's example API.

Serves ``/api/v1.0/health``, ``/assets``, ``/assets/{id}`` and ``/assets/{id}/state`` over
HTTPS (a ``trustme`` certificate for 127.0.0.1 / localhost) with hypercorn's Trio worker on
an ephemeral 127.0.0.1 port, in a basic-auth, a token (``?token=``) or an OAuth2
client-credentials variant.  Every variant also serves what the OAuth2 document
(``tests/data/pump-fleet-oauth2.yaml``) declares: ``/assets/search`` (array query parameters
in each collection format and a pipe-separated header, decoded here independently of the
gateway's encoder and echoed back with the raw query), ``/batch/{ids}`` (a csv array in the
path), ``POST /assets/{id}/notes`` (``application/x-www-form-urlencoded``) and ``POST
/assets/{id}/firmware`` (``multipart/form-data`` with a file), both echoing what they parsed.

The OAuth2 variant has a token endpoint, ``POST /oauth/token`` (RFC 6749 §4.4: client id and
secret by HTTP basic or as form fields, ``scope`` checked against the client's scopes), and
accepts only bearer tokens it issued, with the scope each route needs (``assets:read``, or
``assets:write`` for the form posts): an unknown or expired token answers 401 with
``WWW-Authenticate: Bearer error="invalid_token"``, a missing scope 403.

Tests steer it: :meth:`PumpFleet.remove_asset`, :meth:`PumpFleet.throttle` (answer 429
with Retry-After the next N times), :meth:`PumpFleet.expire_tokens` (every issued token
answers 401 from now on), :meth:`PumpAPI.stop` (close the port: health goes red).  Nothing
here reads a clock: tokens expire when a test says so.  Its OpenAPI 2 documents are
``tests/data/pump-fleet-basic.yaml``, ``pump-fleet-token.yaml`` and ``pump-fleet-oauth2.yaml``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio
import trustme
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "BASE_PATH",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "TOKEN_PATH",
    "PumpAPI",
    "PumpFleet",
    "TokenRequest",
    "open_pump_api",
]

BASE_PATH = "/api/v1.0"
TOKEN_PATH = "/oauth/token"
USERNAME = "fleet-operator"
PASSWORD = "s3cret-Pump-Passw0rd-7f1c"  # distinctive: tests grep logs and the DB for it
TOKEN = "tok-9b2f4c1e8d7a6b5c4d3e2f1a0b9c8d7e"
CLIENT_ID = "pump-gateway-client"
CLIENT_SECRET = "cl1ent-S3cret-Pump-OAuth-4e9a"  # distinctive, as PASSWORD
CLIENT_SCOPES = ("assets:read", "assets:write")
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
AuthMode = Literal["basic", "token", "oauth2"]
# how each array parameter of /assets/search is split (None: one query pair per item)
SEARCH_FORMATS: dict[str, str | None] = {
    "ids": ",",
    "sites": None,
    "models": " ",
    "tags": "\t",
    "fields": "|",
    "limits": ",",
}


class TokenRequest(msgspec.Struct, frozen=True):
    """One successful token request: how the client authenticated, what it asked for."""

    client_auth: str  # basic | body
    scope: str
    token: str


class _Issued(msgspec.Struct):
    scopes: frozenset[str]
    expired: bool = False


class PumpFleet:
    """The API's data and its test controls (Trio thread only)."""

    def __init__(
        self,
        *,
        auth: AuthMode = "basic",
        assets: int = 3,
        client_auth: tuple[str, ...] = ("basic", "body"),
        token_lifetime_s: int = 3600,
    ) -> None:
        self.auth = auth
        self.username, self.password, self.token = USERNAME, PASSWORD, TOKEN
        self.client_id, self.client_secret = CLIENT_ID, CLIENT_SECRET
        self.client_auth = client_auth  # the client authentication methods accepted
        self.token_lifetime_s = token_lifetime_s  # the expires_in announced
        self.assets: dict[str, dict[str, Any]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        for i in range(1, assets + 1):
            self.add_asset(f"pump-{i:03d}", site="north" if i % 2 else "south")
        self.throttled = 0
        self.retry_after = "1"
        self.requests: list[tuple[str, str]] = []  # (path, query) of every request seen
        self.issued: dict[str, _Issued] = {}
        self.token_requests: list[TokenRequest] = []
        self.refused_tokens = 0  # requests answered 401 invalid_token

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

    def expire_tokens(self) -> None:
        """Every token issued so far is expired: using one answers 401."""
        for issued in self.issued.values():
            issued.expired = True

    def _refusal(self, request: Request, scope: str) -> Response | None:
        if self.auth == "token":
            if hmac.compare_digest(request.query_params.get("token", ""), self.token):
                return None
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        header = request.headers.get("authorization", "")
        if self.auth == "basic":
            pair = f"{self.username}:{self.password}".encode()
            if hmac.compare_digest(header, "Basic " + base64.b64encode(pair).decode()):
                return None
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        kind, _, value = header.partition(" ")
        issued = self.issued.get(value) if kind.lower() == "bearer" else None
        if issued is None or issued.expired:
            self.refused_tokens += 1
            return JSONResponse(
                {"error": "invalid_token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope not in issued.scopes:
            return JSONResponse(
                {"error": "insufficient_scope", "scope": scope},
                status_code=403,
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        return None

    async def _guard(self, request: Request, scope: str = "assets:read") -> Response | None:
        self.requests.append((request.url.path, request.url.query))
        refused = self._refusal(request, scope)
        if refused is not None:
            return refused
        if self.throttled > 0:
            self.throttled -= 1
            return JSONResponse(
                {"error": "slow down"}, status_code=429, headers={"Retry-After": self.retry_after}
            )
        return None

    async def _token(self, request: Request) -> Response:
        """RFC 6749 §4.4 client-credentials token endpoint (errors as §5.2)."""
        self.requests.append((request.url.path, request.url.query))

        def error(code: str, status: int = 400, **headers: str) -> Response:
            return JSONResponse({"error": code}, status_code=status, headers=headers)

        if request.headers.get("content-type", "").split(";")[0].strip() != FORM:
            return error("invalid_request")
        form = await request.form()
        header = request.headers.get("authorization", "")
        if header and "client_id" in form:
            return error("invalid_request")  # §2.3: one authentication method only
        if header.startswith("Basic "):
            method = "basic"
            try:
                raw = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return error("invalid_client", 401, **{"WWW-Authenticate": "Basic"})
            user, _, pw = raw.partition(":")
            client = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pw)
        else:
            method = "body"
            client = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        valid = hmac.compare_digest(client[0], self.client_id) and hmac.compare_digest(
            client[1], self.client_secret
        )
        if method not in self.client_auth or not valid:
            return error("invalid_client", 401, **{"WWW-Authenticate": "Basic"})
        if form.get("grant_type") != "client_credentials":
            return error("unsupported_grant_type")
        scopes = str(form.get("scope", "")).split() or ["assets:read"]
        if any(s not in CLIENT_SCOPES for s in scopes):
            return error("invalid_scope")
        token = "pat-" + secrets.token_urlsafe(24)
        self.issued[token] = _Issued(frozenset(scopes))
        self.token_requests.append(TokenRequest(method, " ".join(scopes), token))
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_s,
                "scope": " ".join(scopes),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _search(self, request: Request) -> Response:
        refused = await self._guard(request)
        if refused is not None:
            return refused
        decoded: dict[str, list[str]] = {}
        for name, sep in SEARCH_FORMATS.items():
            values = request.query_params.getlist(name)
            if values:
                decoded[name] = values if sep is None else values[0].split(sep)
        header = request.headers.get("x-sites")
        if header is not None:
            decoded["X-Sites"] = header.split("|")
        sites = set(decoded.get("sites", [])) | set(decoded.get("X-Sites", []))
        pumps = [
            a
            for a in self.assets.values()
            if ("ids" not in decoded or a["id"] in decoded["ids"])
            and (not sites or a["site"] in sites)
        ]
        return JSONResponse({"query": request.url.query, "decoded": decoded, "pumps": pumps})

    async def _batch(self, request: Request) -> Response:
        refused = await self._guard(request)
        if refused is not None:
            return refused
        ids = request.path_params["ids"].split(",")
        return JSONResponse([self.assets[i] for i in ids if i in self.assets])

    async def _form_echo(self, request: Request, media: str) -> Response:
        """Parse a form post (Starlette + python-multipart) and say what arrived."""
        refused = await self._guard(request, "assets:write")
        if refused is not None:
            return refused
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != media:
            return JSONResponse({"error": f"expected {media}, got {ctype}"}, status_code=415)
        pump = request.path_params["id"]
        if pump not in self.assets:
            return JSONResponse({"error": "no such asset"}, status_code=404)
        fields: dict[str, list[str]] = {}
        files: list[dict[str, Any]] = []
        async with request.form() as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    files.append(
                        {
                            "field": key,
                            "filename": value.filename or "",
                            "content_type": value.content_type or "",
                            "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(),
                        }
                    )
                else:
                    fields.setdefault(key, []).append(value)
        body = {"pump": pump, "content_type": ctype, "fields": fields, "files": files}
        return JSONResponse(body, status_code=201)

    def app(self) -> Starlette:
        async def health(request: Request) -> Response:
            self.requests.append((request.url.path, request.url.query))
            return JSONResponse({"status": "ok"})

        async def assets(request: Request) -> Response:
            return await self._guard(request) or JSONResponse(list(self.assets.values()))

        async def asset(request: Request) -> Response:
            refused = await self._guard(request)
            if refused is not None:
                return refused
            found = self.assets.get(request.path_params["id"])
            if found is None:
                return JSONResponse({"error": "no such asset"}, status_code=404)
            return JSONResponse(found)

        async def state(request: Request) -> Response:
            refused = await self._guard(request)
            if refused is not None:
                return refused
            found = self.states.get(request.path_params["id"])
            if found is None:
                return JSONResponse({"error": "no such asset"}, status_code=404)
            return JSONResponse(found)

        async def notes(request: Request) -> Response:
            return await self._form_echo(request, FORM)

        async def firmware(request: Request) -> Response:
            return await self._form_echo(request, MULTIPART)

        return Starlette(
            routes=[
                Route(f"{BASE_PATH}/health", health),
                Route(TOKEN_PATH, self._token, methods=["POST"]),
                Route(f"{BASE_PATH}/assets", assets),
                Route(f"{BASE_PATH}/assets/search", self._search),
                Route(f"{BASE_PATH}/batch/{{ids}}", self._batch),
                Route(f"{BASE_PATH}/assets/{{id}}", asset),
                Route(f"{BASE_PATH}/assets/{{id}}/state", state),
                Route(f"{BASE_PATH}/assets/{{id}}/notes", notes, methods=["POST"]),
                Route(f"{BASE_PATH}/assets/{{id}}/firmware", firmware, methods=["POST"]),
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
    workdir: Path, *, auth: AuthMode = "basic", assets: int = 3, **fleet: Any
) -> AsyncIterator[PumpAPI]:
    """Serve a pump fleet over HTTPS on an ephemeral 127.0.0.1 port until the block ends.
    ``fleet`` passes further :class:`PumpFleet` options (``client_auth``...)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = workdir / "pump-cert.pem", workdir / "pump-key.pem"

    def write_files() -> None:  # hypercorn loads the certificate from files
        workdir.mkdir(parents=True, exist_ok=True)
        cert.private_key_pem.write_to_path(str(keyfile))
        certfile.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))

    await trio.to_thread.run_sync(write_files)
    pumps = PumpFleet(auth=auth, assets=assets, **fleet)
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
                await serve(pumps.app(), cfg, mode="asgi")  # type: ignore[arg-type]
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        api = PumpAPI(pumps, port, ca.cert_pem.bytes().decode(), scope, stopped)
        try:
            yield api
        finally:
            scope.cancel()
