"""Calling an integration's operations: request building (sans-IO) and execution (httpx).

:func:`prepare` turns an operationId, the caller's parameters and the integration's
configuration into a :class:`PreparedRequest`: path template filled (each value
percent-encoded), query, headers and body encoded (JSON, form or multipart, arrays by their
``collectionFormat``: :mod:`~gateway.services.integrations.encoding`), basic or apiKey auth
applied, parameters validated against the declared types — configuration values are the
defaults of parameters with the same name, which is how token parameters (``in: path`` /
``in: query``) get their secret.  An OAuth2 requirement is left for the caller to satisfy
with :func:`authorize` once it holds a token (:mod:`~gateway.services.integrations.oauth2`).
:func:`execute` sends it with httpx (HTTPS verification on; a custom CA bundle per
integration), validates a 2xx body against the declared response schema and turns every
failure into a :class:`UpstreamError` with a clear message (transport failures in one
sentence: :mod:`~gateway.services.integrations.reasons`).

Secrets never appear in messages: error texts carry the path without the query string, and
any configured secret value is replaced by ``***`` in text quoted from the upstream.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import msgspec

from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.services.integrations.encoding import (
    FilePart,
    ParameterInvalid,
    collection_values,
    encode_form,
    encode_multipart,
    file_part,
)
from gateway.services.integrations.reasons import transport_failure
from gateway.services.integrations.schema import check_value
from gateway.services.integrations.validate import (
    FORM,
    JSON,
    MULTIPART,
    ConfigParam,
    OperationSpec,
    ParamSpec,
    Requirement,
    SecurityScheme,
    SecurityUse,
    Spec,
)

__all__ = [
    "CallResult",
    "NotConfigured",
    "ParameterInvalid",
    "PreparedRequest",
    "UpstreamError",
    "authorize",
    "base_url",
    "choose_requirement",
    "coerce_config",
    "execute",
    "find_operation",
    "make_client",
    "parse_retry_after",
    "prepare",
    "redact",
    "transport_error",
]

log = logging.getLogger(__name__)

MAX_QUOTED = 300  # characters of an upstream body quoted in an error message
REDACTED = "***"


class NotConfigured(BadRequest):
    """A required configuration value (or one an operation needs) is not set."""

    code = "not_configured"


class UpstreamError(GatewayError):
    """The third-party API failed: unreachable, timed out, an error status, or a body that
    does not match the document.  ``status`` is the upstream's HTTP status when there was
    one; ``retryable`` says whether trying again may help; ``retry_after`` (seconds) is the
    upstream's Retry-After, if it sent one."""

    code = "upstream_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        if code is not None:
            self.code = code  # type: ignore[misc]


class PreparedRequest(msgspec.Struct, frozen=True):
    method: str
    url: str  # without the query string
    query: list[tuple[str, str]]
    headers: dict[str, str]
    content: bytes | None = None  # the encoded body (JSON, form or multipart)
    secrets: tuple[str, ...] = ()  # values to redact from anything shown or logged
    oauth2: SecurityUse | None = None  # a bearer token still to add (:func:`authorize`)


class CallResult(msgspec.Struct, frozen=True):
    """An operation's answer: the upstream status and its (validated) JSON body."""

    status: int
    body: Any


class _HideQuery(logging.Filter):
    """httpx logs every request's full URL at INFO; token parameters travel in the query
    string, so the query is cut from those lines before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                a.copy_with(query=None) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_HideQuery())


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    return text


def base_url(spec: Spec, *, host: str | None, allow_http: bool) -> str:
    """``scheme://host`` for calls: https unless the document only offers http and the
    integration carries the development flag."""
    target = host or spec.host
    if not target:
        raise NotConfigured("the document has no host and the integration sets none")
    scheme = "https" if "https" in spec.schemes or not allow_http else "http"
    return f"{scheme}://{target}"


def coerce_config(params: Mapping[str, ConfigParam], values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate configuration values against their declared types (numbers given as text by
    a CLI are converted).  Raise ``BadRequest`` naming the first bad value."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        param = params.get(name)
        if param is None:
            raise BadRequest(
                f"unknown configuration parameter {name!r} (declared: "
                f"{', '.join(sorted(params)) or 'none'})"
            )
        out[name] = _coerce(param.type, value, f"configuration parameter {name!r}")
    return out


def _coerce(kind: str, value: Any, what: str) -> Any:
    try:
        if kind == "string":
            if isinstance(value, str):
                return value
        elif kind == "integer":
            if isinstance(value, str):
                return int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind == "number":
            if isinstance(value, str):
                return float(value)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value
        elif kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
        else:
            return value
    except ValueError:
        pass
    raise ParameterInvalid(f"{what} must be of type {kind}")


def _coerce_param(p: ParamSpec, value: Any) -> Any:
    """Text given for a typed parameter (a CLI's ``k=v``) becomes the declared type; the
    schema check that follows refuses what does not convert."""
    kind = p.schema.get("type") if isinstance(p.schema, dict) else None
    what = f"parameter {p.name!r}"
    if isinstance(value, str) and kind in ("integer", "number", "boolean"):
        return _coerce(str(kind), value, what)
    if kind == "array" and isinstance(value, list):
        items = p.schema.get("items")
        item_kind = items.get("type") if isinstance(items, dict) else None
        if item_kind in ("integer", "number", "boolean"):
            return [_coerce_item(str(item_kind), v) for v in value]
    return value


def _coerce_item(kind: str, value: Any) -> Any:
    """An array item given as text, converted when it can be (the schema check then names
    the item that could not, by its index)."""
    if not isinstance(value, str):
        return value
    try:
        return _coerce(kind, value, "item")
    except ParameterInvalid:
        return value


def _missing(scheme: SecurityScheme, config: Mapping[str, Any]) -> str | None:
    """What configuration ``scheme`` still lacks, or None when it can be used."""
    needed = [scheme.secret_field]
    if scheme.type in ("basic", "oauth2"):
        needed.append(scheme.user_field)
    for name in needed:
        if config.get(name or "") in (None, ""):
            return f"{scheme.name}: configuration parameter {name!r} is not set"
    return None


def choose_requirement(spec: Spec, op: OperationSpec, config: Mapping[str, Any]) -> Requirement:
    """The security requirement ``op`` is called with: the first alternative whose schemes
    are all configured (OpenAPI 2: any one requirement object suffices).  Raises
    ``NotConfigured`` naming what the first alternative lacks when none is complete."""
    alternatives = op.security if op.security is not None else spec.security
    if not alternatives:
        return ()
    first: str | None = None
    for req in alternatives:
        lacks = [m for use in req if (m := _missing(spec.security_schemes[use.scheme], config))]
        if not lacks:
            return req
        first = first or lacks[0]
    raise NotConfigured(first or "no security requirement can be met")


def prepare(
    spec: Spec,
    op: OperationSpec,
    params: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    base: str,
) -> PreparedRequest:
    """Build the request for ``op``.  ``config`` holds decrypted configuration values.

    Raises ``ParameterInvalid`` (unknown or ill-typed parameter, missing required one) or
    ``NotConfigured`` (the auth scheme needs a value nobody set).  Pure: no I/O.  When the
    chosen requirement is OAuth2, ``oauth2`` names the token to add with :func:`authorize`.
    """
    secrets = tuple(
        str(config[n])
        for n, p in spec.config_params.items()
        if p.secret and config.get(n) not in (None, "")
    )
    known = {p.name for p in op.parameters}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ParameterInvalid(
            f"{op.operation_id}: unknown parameter(s) {', '.join(unknown)}"
            f" (declared: {', '.join(sorted(known)) or 'none'})"
        )
    path = op.path
    query: list[tuple[str, str]] = []
    headers = {"Accept": JSON}
    form: list[tuple[str, str]] = []
    files: list[FilePart] = []
    content: bytes | None = None
    for p in op.parameters:
        if p.name in params:
            value = params[p.name]
        elif p.name in config and config[p.name] not in (None, ""):
            value = config[p.name]
        elif p.required:
            raise ParameterInvalid(
                f"{op.operation_id}: parameter {p.name!r} ({p.location}) is required"
            )
        else:
            continue
        if p.location == "formData" and p.schema.get("type") == "file":
            files.append(file_part(p.name, value))
            continue
        if p.location != "body":
            value = _coerce_param(p, value)
        problems = check_value(p.schema, value, spec.definitions, f"$.{p.name}")
        if problems:
            where, why = problems[0]
            raise ParameterInvalid(f"{op.operation_id}: parameter {where[2:]}: {why}")
        if p.location == "body":
            content = json.dumps(value).encode()
            headers["Content-Type"] = JSON
            continue
        texts = collection_values(p.name, value, p.collection_format)
        if p.location == "path":
            path = path.replace("{" + p.name + "}", urllib.parse.quote(texts[0], safe=""))
        elif p.location == "query":
            query.extend((p.name, t) for t in texts)
        elif p.location == "header":
            headers[p.name] = texts[0]
        else:
            form.extend((p.name, t) for t in texts)
    form_params = [p for p in op.parameters if p.location == "formData"]
    if form_params:
        declares_file = any(p.schema.get("type") == "file" for p in form_params)
        if MULTIPART in op.consumes and (declares_file or FORM not in op.consumes):
            content, headers["Content-Type"] = encode_multipart(form, files)
        else:
            content, headers["Content-Type"] = encode_form(form), FORM
    bearer: SecurityUse | None = None
    for use in choose_requirement(spec, op, config):
        scheme = spec.security_schemes[use.scheme]
        secret = str(config[scheme.secret_field or ""])
        if scheme.type == "oauth2":
            bearer = use
        elif scheme.type == "basic":
            pair = f"{config[scheme.user_field or '']}:{secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif scheme.key_in == "header":
            headers[scheme.key_name or "Authorization"] = secret
        else:
            query.append((scheme.key_name or "token", secret))
    return PreparedRequest(
        op.method, base + spec.base_path + path, query, headers, content, secrets, bearer
    )


def authorize(req: PreparedRequest, token: str) -> PreparedRequest:
    """``req`` carrying the OAuth2 bearer ``token`` (RFC 6750 §2.1); the token joins the
    values redacted from anything shown."""
    return msgspec.structs.replace(
        req,
        headers={**req.headers, "Authorization": f"Bearer {token}"},
        secrets=(*req.secrets, token),
        oauth2=None,
    )


def make_client(*, ca_bundle: str | None, timeout_s: float) -> httpx.AsyncClient:
    """An httpx client verifying HTTPS against the system store or ``ca_bundle`` (PEM)."""
    verify: ssl.SSLContext | bool = True
    if ca_bundle:
        try:
            verify = ssl.create_default_context(cadata=ca_bundle)
        except ssl.SSLError as exc:
            raise BadRequest(f"ca_bundle is not a valid PEM bundle: {exc}") from exc
    return httpx.AsyncClient(
        verify=verify, timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


async def execute(
    client: httpx.AsyncClient, spec: Spec, op: OperationSpec, req: PreparedRequest
) -> CallResult:
    """Send ``req``; return the validated 2xx answer or raise :class:`UpstreamError`."""
    parts = urllib.parse.urlsplit(req.url)
    shown = f"{req.method} {parts.path}"
    try:
        resp = await client.request(
            req.method,
            req.url,
            params=httpx.QueryParams(tuple(req.query)),
            headers=req.headers,
            content=req.content,
        )
    except httpx.HTTPError as exc:
        what = f"{op.operation_id}: {shown}"
        raise transport_error(what, exc, client, req.url, req.secrets) from None
    status = resp.status_code
    if not 200 <= status < 300:
        quoted = redact(resp.text[:MAX_QUOTED], req.secrets)
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        raise UpstreamError(
            f"{op.operation_id}: {shown} answered {status}" + (f": {quoted}" if quoted else ""),
            status=status,
            retryable=status == 429 or status >= 500,
            retry_after=retry_after,
        )
    if not resp.content or status == 204:
        return CallResult(status, None)
    try:
        body = resp.json()
    except ValueError:
        raise UpstreamError(
            f"{op.operation_id}: {shown} answered {status} with a body that is not JSON",
            status=status,
            code="upstream_response_invalid",
        ) from None
    schema = op.responses.get(str(status), op.responses.get("default"))
    if schema is not None:
        problems = check_value(schema, body, spec.definitions)
        if problems:
            where, why = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UpstreamError(
                f"{op.operation_id}: response does not match the document at {where}: {why}{more}",
                status=status,
                code="upstream_response_invalid",
            )
    return CallResult(status, body)


def transport_error(
    what: str, exc: httpx.HTTPError, client: httpx.AsyncClient, url: str, secrets: Iterable[str]
) -> UpstreamError:
    """The :class:`UpstreamError` for a request that got no HTTP answer: ``what`` (the
    operation and request line) and the cause in one sentence.  Always retryable."""
    target = urllib.parse.urlsplit(url).netloc
    limit = client.timeout.read or client.timeout.connect or 0.0
    reason = redact(transport_failure(exc, target=target, timeout_s=limit), secrets)
    code = "upstream_timeout" if isinstance(exc, httpx.TimeoutException) else "upstream_unreachable"
    return UpstreamError(f"{what} failed: {reason}", retryable=True, code=code)


def find_operation(spec: Spec, operation_id: str) -> OperationSpec:
    op = spec.operations.get(operation_id)
    if op is None:
        raise NotFound(
            f"operation {operation_id!r} is not in the document (operations: "
            f"{', '.join(sorted(spec.operations))})"
        )
    return op
