"""Management routes: the per-connector content store (firmware and files for devices).

Uploads stream from the request into :meth:`ContentService.put` chunk by chunk, so a
150 MB file never sits in memory; the service hashes, fsyncs and commits before the
answer.  Downloads are served from the blob file with single-range support.  A ``Range``
header we cannot parse is ignored (RFC 9110 §14.2: serve the whole file); one that cannot
be satisfied is answered 416 in the error shape.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.errors import AlreadyExists, GatewayError, NotFound, TooLarge
from gateway.mgmt.common import (
    Endpoint,
    QueryParam,
    error_response,
    json_response,
    q_bool,
    q_str,
)
from gateway.services.bundle import Services
from gateway.services.content import CONTENT_ID_PATTERN, ContentInfo

__all__ = ["endpoints"]

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(GatewayError):
    code = "range_not_satisfiable"
    http_status = 416


class ContentList(msgspec.Struct, frozen=True):
    items: list[ContentInfo]
    next: str | None = None


def _check_range(header: str | None, size: int) -> bool:
    """True when ``header`` is one satisfiable byte range; False when it should be ignored.
    Raises ``RangeNotSatisfiable`` for a well-formed range past the end."""
    if header is None:
        return False
    m = _RANGE_RE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return False
    start, end = m.group(1), m.group(2)
    if start and end and int(end) < int(start):
        return False
    if (start and int(start) >= size) or (not start and int(end) == 0):
        raise RangeNotSatisfiable(f"range {header!r} outside 0..{size}")
    return True


class _Download(Response):
    """Serve a blob: FileResponse for the bytes (it streams and slices ranges), with the
    scope's ``Range`` header removed when we decided to ignore it."""

    def __init__(self, file: FileResponse, *, keep_range: bool) -> None:
        super().__init__(status_code=file.status_code)
        self.file = file
        self.keep_range = keep_range

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keep_range:
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
            scope = {**scope, "headers": headers}
        await self.file(scope, receive, send)


def endpoints(services: Services) -> list[Endpoint]:
    content = services.content
    reg = services.registry

    def ids(request: Request) -> tuple[str, str]:
        return request.path_params["cid"], request.path_params["content_id"]

    async def list_content(request: Request) -> Response:
        cid = request.path_params["cid"]
        return json_response(ContentList(await content.list(cid, q_str(request, "prefix") or "")))

    async def _upload(request: Request, cid: str, content_id: str) -> ContentInfo:
        reg.require(cid)
        content.check_id(content_id)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > content.max_size:
            raise TooLarge(f"content larger than {content.max_size} bytes")

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                if chunk:
                    yield chunk

        return await content.put(
            cid,
            content_id,
            chunks(),
            content_type=request.headers.get("content-type") or "application/octet-stream",
            description=q_str(request, "description") or "",
        )

    async def create_content(request: Request) -> Response:
        cid = request.path_params["cid"]
        content_id = q_str(request, "id") or ""
        reg.require(cid)
        content.check_id(content_id)
        try:
            await content.info(cid, content_id)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"content {content_id!r} already exists (PUT replaces)")
        info = await _upload(request, cid, content_id)
        return json_response(
            info, 201, {"Location": f"/api/v1/connectors/{cid}/content/{quote(content_id)}"}
        )

    async def put_content(request: Request) -> Response:
        cid, content_id = ids(request)
        return json_response(await _upload(request, cid, content_id))

    async def get_content(request: Request) -> Response:
        cid, content_id = ids(request)
        info = await content.info(cid, content_id)
        if q_bool(request, "info", False):
            return json_response(info)
        try:
            keep = _check_range(request.headers.get("range"), info.length)
        except RangeNotSatisfiable as exc:
            return error_response(exc, {"Content-Range": f"bytes */{info.length}"})
        file = FileResponse(
            content.blob_path(info),
            media_type=info.type,
            headers={"ETag": f'"{info.sha256}"', "X-Content-SHA256": info.sha256},
        )
        return _Download(file, keep_range=keep)

    async def delete_content(request: Request) -> Response:
        await content.delete(*ids(request))
        return Response(status_code=204)

    base = "/api/v1/connectors/{cid}/content"
    one = f"{base}/{{content_id:path}}"
    t = "content"
    raw = {"application/octet-stream": {"type": "string", "format": "binary"}}
    desc_q = QueryParam(
        "description", {"type": "string", "maxLength": 1000, "pattern": r"^[^\n]*$"}, "one line"
    )
    return [
        Endpoint(
            "GET",
            base,
            list_content,
            "List content items",
            t,
            "listContent",
            response=ContentList,
            query=(
                QueryParam(
                    "prefix", {"type": "string", "maxLength": 200}, "only ids starting with this"
                ),
            ),
            errors=(400, 404),
        ),
        Endpoint(
            "POST",
            base,
            create_content,
            "Upload a new content item (streamed)",
            t,
            "createContent",
            body_media=raw,
            response=ContentInfo,
            status=201,
            creates=("content_id", "$response.body#/id"),
            query=(
                QueryParam(
                    "id",
                    {"type": "string", "maxLength": 200, "pattern": CONTENT_ID_PATTERN},
                    "content id",
                    required=True,
                ),
                desc_q,
            ),
            errors=(400, 404, 409, 413),
            response_headers={"Location": {"type": "string"}},
        ),
        Endpoint(
            "GET",
            one,
            get_content,
            "Download a content item (Range supported), or its metadata with ?info=true",
            t,
            "getContent",
            response_media={
                "application/octet-stream": {"type": "string", "format": "binary"},
                "application/json": {"$ref": "#/components/schemas/ContentInfo"},
            },
            extra_responses={206: "partial content (Range)"},
            query=(QueryParam("info", {"type": "boolean"}, "metadata instead of bytes"),),
            errors=(400, 404, 416),
        ),
        Endpoint(
            "PUT",
            one,
            put_content,
            "Upload or replace a content item (streamed)",
            t,
            "putContent",
            body_media=raw,
            response=ContentInfo,
            creates=("content_id", "$request.path.content_id"),
            query=(desc_q,),
            errors=(400, 404, 413),
        ),
        Endpoint(
            "DELETE",
            one,
            delete_content,
            "Delete a content item",
            t,
            "deleteContent",
            status=204,
            errors=(400, 404),
        ),
    ]
