"""The one client of the management REST API (httpx), used by every CLI command.

Address convention: ``api`` is the management API's root, ``http://host:port`` — what
``--api``, ``GATEWAY_API`` and ``DIR/run.json`` give (see :mod:`gateway.cli.context`).  Paths
passed to the methods are relative to ``/api/v1`` (``client.get("/connectors")``); segments
that come from the user go through :func:`seg` (or :func:`content_path`, which keeps the
``/`` of content ids).

Errors, so that every command fails the same way:

* :class:`ApiError` — the gateway answered 4xx/5xx; carries the status and the API's
  ``{"error", "message"}`` (plus ``violations`` of a refused integration document);
* :class:`Unreachable` — no answer at all (refused, timed out, broken off), with the reason
  as a few words, never a library's exception text.

Resource handling: a :class:`Client` owns one ``httpx.Client`` (keep-alive, thread-safe, so
bulk edits can share it between worker threads) and is closed by ``with``.  Uploads are read
from the file in :data:`CHUNK` pieces and downloads written as they arrive, so a 150 MB
firmware file never sits in memory; both report progress through a callback.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
import msgspec
from httpx_sse import SSEError, connect_sse

__all__ = [
    "API_PREFIX",
    "CHUNK",
    "ApiError",
    "Client",
    "Download",
    "LogMessage",
    "Unreachable",
    "content_path",
    "seg",
]

API_PREFIX = "/api/v1"
CHUNK = 64 * 1024  # bytes per upload/download step: fine-grained enough for a progress bar
TIMEOUT_S = 120.0  # a job run or a 100k-row import answers when it is done
CONNECT_TIMEOUT_S = 10.0


class ApiError(Exception):
    """The gateway refused: ``status`` and the API's error ``code`` and ``message``."""

    def __init__(
        self, status: int, code: str, message: str, violations: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.violations = violations or []


class Unreachable(Exception):
    """No answer from ``url``; ``reason`` says why in a few words ("connection refused")."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class Download:
    """An answer being downloaded: ``length`` (None if unknown) and :meth:`chunks`."""

    def __init__(self, api: str, response: httpx.Response, length: int | None) -> None:
        self.api = api
        self.response = response
        self.length = length

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self.response.iter_bytes(CHUNK)
        except httpx.HTTPError as exc:
            raise Unreachable(self.api, _reason(exc)) from None


class LogMessage(msgspec.Struct, frozen=True):
    """One Server-Sent Event of the live log: ``log`` (``data`` is a record) or
    ``dropped`` (the gateway ended the stream: the client was too slow); plus ``open``,
    made up here when the gateway has accepted the subscription."""

    event: str
    data: dict[str, Any]


def seg(value: str) -> str:
    """One path segment, quoted (identities may hold ``?``, ``%`` and spaces)."""
    return quote(value, safe="")


def content_path(cid: str, content_id: str = "") -> str:
    base = f"/connectors/{seg(cid)}/content"
    return f"{base}/{quote(content_id, safe='/')}" if content_id else base


def _reason(exc: httpx.HTTPError) -> str:
    """A few words for a transport failure, from the OS error under httpx's wrappers."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return "it stopped answering (timed out)"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection broke off"
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, OSError) and cur.errno is not None:
            if cur.errno == errno.ECONNREFUSED:
                return "connection refused"
            if cur.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return "host unreachable"
            return (cur.strerror or str(cur)).lower()
        cur = cur.__cause__ or cur.__context__
    text = str(exc).lower()
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host name"
    return text or type(exc).__name__


def _api_error(r: httpx.Response) -> ApiError:
    try:
        body = msgspec.json.decode(r.read())
        return ApiError(r.status_code, body["error"], body["message"], body.get("violations"))
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        text = r.text.strip().splitlines()
        return ApiError(r.status_code, f"http_{r.status_code}", text[0][:200] if text else "")


def _chunks(fh: BinaryIO, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk
        if progress:
            progress(len(chunk))


class Client:
    """Requests to one gateway's management API with one bearer token (or none)."""

    def __init__(self, api: str, token: str | None, *, timeout: float = TIMEOUT_S) -> None:
        self.api = api
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=api + API_PREFIX,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
            trust_env=False,  # a proxy from the environment must not see the admin token
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """Send one request; the decoded JSON answer (None for 204), or raise."""
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise Unreachable(self.api, _reason(exc)) from None
        if r.status_code >= 400:
            raise _api_error(r)
        if r.status_code == 204 or not r.content:
            return None
        if "json" not in r.headers.get("content-type", "json"):
            return r.text
        return msgspec.json.decode(r.content)

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters; None values are left out, lists repeat the name."""
        query = {k: v for k, v in params.items() if v is not None and v != []}
        return self.request("GET", path, params=query)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=body, **kw)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every page of a list route (``{"items", "next"}``), following ``next`` as
        ``cursor`` until it is null."""
        cursor = params.pop("cursor", None)
        while True:
            page = self.get(path, cursor=cursor, **params)
            yield page
            cursor = page.get("next")
            if cursor is None:
                return

    # -- streams -------------------------------------------------------------------------

    def upload(
        self,
        method: str,
        path: str,
        fh: BinaryIO,
        *,
        size: int,
        content_type: str,
        params: dict[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Send ``size`` bytes of ``fh`` as the body, reporting each chunk sent."""
        return self.request(
            method,
            path,
            params=params or {},
            content=_chunks(fh, progress),
            headers={"Content-Type": content_type, "Content-Length": str(size)},
        )

    @contextmanager
    def download(self, path: str) -> Iterator[Download]:
        """``GET path`` as a stream: its length (if the gateway said) and its chunks.  The
        response is closed when the ``with`` ends."""
        try:
            with self.http.stream("GET", path) as r:
                if r.status_code >= 400:
                    raise _api_error(r)
                length = r.headers.get("content-length")
                yield Download(self.api, r, int(length) if length and length.isdigit() else None)
        except httpx.HTTPError as exc:
            raise Unreachable(self.api, _reason(exc)) from None

    def live_log(self, cid: str, **params: Any) -> Iterator[LogMessage]:
        """The connector's live log (Server-Sent Events, httpx-sse) until the gateway ends
        the stream; raises :class:`Unreachable` if the connection is lost."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            with connect_sse(
                self.http,
                "GET",
                f"/connectors/{seg(cid)}/logs",
                params=query,
                timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=None),
            ) as source:
                if source.response.status_code >= 400:
                    raise _api_error(source.response)
                yield LogMessage("open", {})
                for sse in source.iter_sse():
                    if sse.data:
                        yield LogMessage(sse.event, msgspec.json.decode(sse.data))
        except (httpx.HTTPError, SSEError) as exc:
            reason = _reason(exc) if isinstance(exc, httpx.HTTPError) else str(exc)
            raise Unreachable(self.api, reason) from None
