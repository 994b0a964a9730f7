"""OAuth2 client-credentials tokens for integrations (RFC 6749 §4.4, bearer use RFC 6750).

A scheme ``type: oauth2, flow: application`` names the configuration parameters holding the
client id and the (encrypted) client secret.  Before an operation that requires it, the
integration asks the ``tokenUrl`` for a token with ``grant_type=client_credentials`` and the
scopes of the operation's requirement, authenticating the client with HTTP basic (the
default; id and secret form-encoded first, RFC 6749 §2.3.1) or with ``client_id`` /
``client_secret`` form fields (``x-exosite-client-auth: body``).

Tokens live only in memory (:class:`TokenCache`, one per bound integration), keyed by scheme
and scope set: never in the database, an event, a metric or a log line, and they are
redacted from any upstream text quoted in an error.  A token is used until shortly before
its ``expires_in`` runs out; a 401 from the API drops it and the call is retried once with
a fresh one (docs/decisions.md, "Cloud-to-cloud integrations").

Request building and response parsing are sans-IO; :func:`fetch_token` is the one await.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable, Mapping

import httpx
import msgspec

from gateway.services.integrations.operations import (
    MAX_QUOTED,
    UpstreamError,
    redact,
    transport_error,
)
from gateway.services.integrations.validate import FORM, JSON, SecurityScheme, Spec

__all__ = [
    "EXPIRY_MARGIN_S",
    "TokenCache",
    "fetch_token",
    "parse_token_response",
    "token_request",
    "token_url",
]

EXPIRY_MARGIN_S = 30.0  # a token is renewed this long before it expires (at most) ...
EXPIRY_MARGIN_SHARE = 0.1  # ... or this share of its lifetime, for short-lived tokens
AUTH_FAILED = "upstream_auth_failed"

TokenKey = tuple[str, tuple[str, ...]]  # (scheme name, sorted scopes)


class _Held(msgspec.Struct, frozen=True):
    token: str
    renew_at: float | None  # clock time after which it is not handed out; None: until a 401


class TokenCache:
    """Access tokens by (scheme, scopes).  Sans-IO: callers pass the current time (Trio's
    clock in production, plain numbers in tests)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[TokenKey, _Held] = {}

    def __repr__(self) -> str:
        return f"TokenCache(<{len(self._held)} token(s) hidden>)"

    def get(self, key: TokenKey, now: float) -> str | None:
        held = self._held.get(key)
        if held is None or (held.renew_at is not None and now >= held.renew_at):
            return None
        return held.token

    def put(self, key: TokenKey, token: str, expires_in: float | None, now: float) -> None:
        """Keep ``token``, obtained at ``now`` (taken before the request: the lifetime
        started no later than that)."""
        renew_at = None
        if expires_in is not None:
            renew_at = now + expires_in - min(EXPIRY_MARGIN_S, expires_in * EXPIRY_MARGIN_SHARE)
        self._held[key] = _Held(token, renew_at)

    def drop(self, key: TokenKey, token: str) -> None:
        """Forget ``token`` (the API refused it) unless another one replaced it already."""
        held = self._held.get(key)
        if held is not None and held.token == token:
            del self._held[key]

    def tokens(self) -> tuple[str, ...]:
        return tuple(h.token for h in self._held.values())


def token_url(scheme: SecurityScheme, spec: Spec, *, base: str, host: str | None) -> str:
    """Where to ask for tokens: a path is on the API's own ``scheme://host``; an absolute
    URL on the document's ``host`` follows the integration's ``host`` override."""
    url = scheme.token_url or ""
    if url.startswith("/"):
        return base + url
    parts = urllib.parse.urlsplit(url)
    if host and spec.host and parts.netloc == spec.host:
        return urllib.parse.urlunsplit(parts._replace(netloc=host))
    return url


def token_request(
    scheme: SecurityScheme, scopes: Iterable[str], client_id: str, secret: str
) -> tuple[dict[str, str], bytes]:
    """Headers and form body of a client-credentials token request."""
    fields = [("grant_type", "client_credentials")]
    scope = " ".join(scopes)
    if scope:
        fields.append(("scope", scope))
    headers = {"Accept": JSON, "Content-Type": FORM}
    if scheme.client_auth == "body":
        fields += [("client_id", client_id), ("client_secret", secret)]
    else:
        quote = urllib.parse.quote_plus
        pair = f"{quote(client_id)}:{quote(secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return headers, urllib.parse.urlencode(fields).encode()


def parse_token_response(
    status: int, body: bytes, *, what: str, secrets: Iterable[str]
) -> tuple[str, float | None]:
    """The access token and its lifetime (seconds, None when not given) from a token
    endpoint's answer; :class:`UpstreamError` for a refusal or a malformed answer."""
    try:
        doc = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        doc = None
    if not 200 <= status < 300:
        detail = ""
        if isinstance(doc, Mapping) and isinstance(doc.get("error"), str):
            detail = str(doc["error"])
            if isinstance(doc.get("error_description"), str):
                detail += f" ({doc['error_description']})"
        else:
            detail = body[:MAX_QUOTED].decode(errors="replace")
        detail = redact(detail, secrets)
        raise UpstreamError(
            f"{what} answered {status}" + (f": {detail}" if detail else ""),
            status=status,
            retryable=status == 429 or status >= 500,
            code=AUTH_FAILED if 400 <= status < 500 and status != 429 else None,
        )
    if not isinstance(doc, Mapping):
        raise UpstreamError(f"{what} answered {status} without a JSON object", code=AUTH_FAILED)
    token, kind = doc.get("access_token"), doc.get("token_type")
    if not isinstance(token, str) or not token:
        raise UpstreamError(f"{what} answered without an access_token", code=AUTH_FAILED)
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise UpstreamError(
            f"{what} answered token_type {kind!r}; only bearer tokens are supported",
            code=AUTH_FAILED,
        )
    raw = doc.get("expires_in")
    if isinstance(raw, str) and raw.isdigit():  # some servers send it as text
        raw = int(raw)
    expires_in = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    return token, None if expires_in is None or expires_in < 0 else expires_in


async def fetch_token(
    client: httpx.AsyncClient,
    url: str,
    scheme: SecurityScheme,
    scopes: Iterable[str],
    *,
    client_id: str,
    secret: str,
    secrets: Iterable[str],
) -> tuple[str, float | None]:
    """Ask ``url`` for a token; raise :class:`UpstreamError` (unreachable, refused,
    malformed) with ``secret`` redacted from anything quoted."""
    hidden = (*secrets, secret)
    what = f"OAuth2 token request ({scheme.name}): POST {urllib.parse.urlsplit(url).path}"
    headers, body = token_request(scheme, scopes, client_id, secret)
    try:
        resp = await client.post(url, headers=headers, content=body)
    except httpx.HTTPError as exc:
        raise transport_error(what, exc, client, url, hidden) from None
    return parse_token_response(resp.status_code, resp.content, what=what, secrets=hidden)
