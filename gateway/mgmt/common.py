"""The management API's shared machinery: endpoint declarations, auth, JSON in and out,
and the one place where errors become HTTP responses.

Every route is declared once as an :class:`Endpoint` (method, path, handler, request and
response types, query parameters).  The Starlette router and the OpenAPI document
(:mod:`gateway.mgmt.openapi`) are both built from the same list, so the document cannot
forget a route or drift from what the handler decodes.

Error contract: every 4xx/5xx body is ``{"error": code, "message": text}``
(:class:`ErrorBody`).  Handlers only raise :class:`gateway.errors.GatewayError`
subclasses (or let msgspec validation errors escape from :func:`decode_body`); the
dispatcher turns them into responses.  Anything else is a bug: it is logged with its
traceback and answered ``500 internal_error`` without leaking details.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
from prometheus_client import Histogram
from starlette.requests import Request
from starlette.responses import Response

from gateway.addresses import normalize_ip
from gateway.clock import now_us
from gateway.errors import BadRequest, GatewayError, MethodNotAllowed, TooLarge, Unauthorized
from gateway.services.credentials import hash_token
from gateway.store.api import CreateAdminToken, RevokeAdminToken, Store

__all__ = [
    "MAX_JSON_BODY",
    "AdminTokens",
    "Endpoint",
    "ErrorBody",
    "Handler",
    "Link",
    "QueryParam",
    "decode_body",
    "error_response",
    "json_response",
    "q_bool",
    "q_float",
    "q_int",
    "q_str",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_JSON_BODY = 1_048_576  # bytes; JSON bodies are small documents, CSV and content differ
TOO_DEEP = "input is nested too deeply"
JSON = "application/json"

Handler = Callable[[Request], Awaitable[Response]]


class ErrorBody(msgspec.Struct, frozen=True):
    """The error shape of every 4xx/5xx response."""

    error: str
    message: str


class QueryParam(msgspec.Struct, frozen=True):
    """One query parameter as the OpenAPI document describes it."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    repeated: bool = False


class Link(msgspec.Struct, frozen=True):
    """An OpenAPI link from a route's success answer to the operation ``operation_id``,
    with that operation's parameters as runtime expressions (``$request.path.cid``,
    ``$response.body#/jobs/0/job``).  Links from a creating route to the routes of what it
    created are derived from :attr:`Endpoint.creates`; these are the others."""

    operation_id: str
    parameters: dict[str, str]


class Endpoint(msgspec.Struct, frozen=True):
    """One route: what the router dispatches and what the OpenAPI document says.

    ``body`` is the msgspec type of a JSON request body; ``body_media`` describes other
    request media types (CSV, octet streams) as ``{media type: JSON schema}``.
    ``response`` is the msgspec type of the JSON success body (None: no body, e.g. 204);
    ``response_media`` overrides it for streamed or non-JSON answers.  ``errors`` lists the
    error statuses the route can answer besides 401 (every authenticated route) and 500.

    ``creates`` says that a success creates something named by a path parameter:
    ``(parameter, runtime expression of its value)``, e.g. ``("cid", "$response.body#/id")``
    for ``POST /api/v1/connectors``, or ``("content_id", "$request.path.content_id")`` for
    an upsert by ``PUT``.  The OpenAPI document links the answer to every route under
    ``…/{parameter}`` (:mod:`gateway.mgmt.openapi`), so a client or a stateful fuzzer can
    go from the creation to what it created.  ``links`` adds links of other kinds.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    operation_id: str
    body: Any = None
    body_required: bool = True
    body_media: dict[str, dict[str, Any]] = {}
    response: Any = None
    status: int = 200
    response_media: dict[str, dict[str, Any]] = {}
    response_headers: dict[str, dict[str, Any]] = {}
    extra_responses: dict[int, str] = {}
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = (400, 404)
    auth: bool = True
    description: str = ""
    creates: tuple[str, str] | None = None
    links: tuple[Link, ...] = ()


_ENCODER = msgspec.json.Encoder()


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        _ENCODER.encode(value),
        status_code=status,
        media_type=JSON,
        headers=dict(headers) if headers else None,
    )


def error_response(exc: GatewayError, headers: Mapping[str, str] | None = None) -> Response:
    if exc.http_status == 413:
        # The rest of the body was never read: the connection cannot carry another request.
        headers = {**(headers or {}), "Connection": "close"}
    return json_response(ErrorBody(exc.code, exc.message), exc.http_status, headers)


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, typ: type[T], *, limit: int = MAX_JSON_BODY) -> T:
    """Decode a JSON body into ``typ`` or raise ``BadRequest`` (wrong type, unknown field,
    malformed JSON) / ``TooLarge``.  Nothing has been changed when this raises."""
    ctype = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if ctype not in (JSON, "") and not ctype.endswith("+json"):
        raise BadRequest(f"expected an application/json body, got {ctype!r}")
    raw = await read_body_limited(request, limit)
    if not raw.strip():
        raise BadRequest("a JSON body is required")
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(TOO_DEEP) from None
    try:
        return msgspec.convert(_integral(doc), typ)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}") from None
    except RecursionError:  # nesting msgspec accepted may still be too deep to walk here
        raise BadRequest(TOO_DEEP) from None


def _integral(value: Any) -> Any:
    """JSON (and JSON Schema) treat ``124.0`` as the integer 124; msgspec's strict decoding
    does not.  Turn integral floats into ints so both agree; every other type rule stays
    strict (``"124"`` is still not an integer)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


# -- query parameters ------------------------------------------------------------------


def q_str(request: Request, name: str, *, max_length: int = 1024) -> str | None:
    value = request.query_params.get(name)
    if value is not None and len(value) > max_length:
        raise BadRequest(f"{name} is longer than {max_length} characters")
    return value


def q_ip(request: Request, name: str = "ip") -> str | None:
    """An IP address parameter in the form the gateway records it (IPv6 compressed, an
    IPv4-mapped IPv6 address as IPv4: :func:`gateway.addresses.normalize_ip`), so a filter
    matches however the operator spelled the address."""
    raw = q_str(request, name, max_length=64)
    if raw is None:
        return None
    try:
        return normalize_ip(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an IPv4 or IPv6 address, not {raw[:64]!r}") from None


def q_int(request: Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be {lo}..{hi}")
    return value


def q_float(request: Request, name: str, default: float, *, lo: float, hi: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number") from None
    if not lo <= value <= hi:  # also rejects NaN
        raise BadRequest(f"{name} must be {lo:g}..{hi:g}")
    return value


def q_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name} must be true or false")


# -- authentication ----------------------------------------------------------------------


class AdminTokenInfo(msgspec.Struct, frozen=True):
    """An extra admin token as listed (never the token itself)."""

    id: str
    name: str
    created: int  # µs


class NewAdminToken(msgspec.Struct, frozen=True):
    """The answer to creating a token: the only time ``token`` is shown in clear."""

    id: str
    name: str
    created: int
    token: str


class AdminTokens:
    """Bearer-token checks: the data directory's admin token, or one of the extra tokens
    kept by the store (as SHA-256 only, found by an indexed lookup)."""

    def __init__(self, store: Store, admin_token: str) -> None:
        self.store = store
        self.admin_token = admin_token

    async def check(self, request: Request) -> None:
        """Raise ``Unauthorized`` unless the request carries a valid admin token."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("an 'Authorization: Bearer <token>' header is required")
        admin = self.admin_token
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            return
        if not await self.store.admin_token_known(hash_token(token)):
            raise Unauthorized("invalid admin token")

    async def list(self) -> list[AdminTokenInfo]:
        return [AdminTokenInfo(t.id, t.name, t.created) for t in await self.store.admin_tokens()]

    async def create(self, name: str) -> NewAdminToken:
        token = secrets.token_urlsafe(32)
        tid = secrets.token_hex(8)
        created = now_us()
        await self.store.write([CreateAdminToken(tid, name, hash_token(token), created)])
        return NewAdminToken(tid, name, created, token)

    async def revoke(self, token_id: str) -> None:
        """Raises ``NotFound``."""
        await self.store.write([RevokeAdminToken(token_id)])


def is_loopback(request: Request) -> bool:
    client = request.client
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client.host).is_loopback
    except ValueError:
        return False


# -- dispatch ---------------------------------------------------------------------------


_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def make_dispatcher(
    endpoints: Sequence[Endpoint], tokens: AdminTokens, times: Histogram | None = None
) -> Handler:
    """One Starlette handler for every method of one path: method routing with a 405 in
    the error shape (and an ``Allow`` header), auth, and the error boundary.  ``times``
    observes each request's duration by method, route template and status (``/metrics``);
    a streamed answer counts until its response object exists, not to its end."""
    by_method = {e.method: e for e in endpoints}
    allow = ", ".join(sorted(by_method))
    known = {e.method: frozenset(q.name for q in e.query) for e in endpoints}
    route = _CONVERTER.sub(r"{\1}", endpoints[0].path)  # the template the OpenAPI shows

    async def dispatch(request: Request) -> Response:
        if times is None:
            return await routed(request)
        t0 = time.perf_counter()
        response = await routed(request)
        method = request.method if request.method in by_method else "other"
        times.labels(method, route, str(response.status_code)).observe(time.perf_counter() - t0)
        return response

    async def routed(request: Request) -> Response:
        ep = by_method.get(request.method)
        if ep is None and request.method == "HEAD":
            ep = by_method.get("GET")
        try:
            if ep is None:
                raise MethodNotAllowed(
                    f"{request.method} is not allowed here (allowed: {allow})", allow=allow
                )
            if ep.auth:
                await tokens.check(request)
            unknown = sorted(set(request.query_params) - known[ep.method])
            if unknown:
                # A misspelt filter must not silently widen a listing (or an event search).
                accepted = ", ".join(sorted(known[ep.method])) or "none"
                raise BadRequest(
                    f"unknown query parameter {', '.join(map(repr, unknown))} "
                    f"(accepted: {accepted})"
                )
            return await ep.handler(request)
        except MethodNotAllowed as exc:
            return error_response(exc, {"Allow": exc.allow})
        except Unauthorized as exc:
            return error_response(exc, {"WWW-Authenticate": 'Bearer realm="gateway"'})
        except GatewayError as exc:
            return error_response(exc)
        except RecursionError:  # input nested past the stack (a document, a cursor): refuse it
            return error_response(BadRequest(TOO_DEEP))
        except Exception:  # the error boundary: log the bug, answer in the error shape
            log.exception("management API: %s %s failed", request.method, request.url.path)
            return json_response(ErrorBody("internal_error", "internal error (see the log)"), 500)

    return dispatch
