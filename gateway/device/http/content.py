"""Content for devices (docs/protocol.md §2.8): list, info, download with ``Range``, and the
optional device upload (§12 item 18, not a Murano endpoint).

Downloads stream the blob from disk in ``CHUNK`` pieces (never loaded whole), so a device
fetching a 100 MB firmware costs one 64 KiB buffer.  Device uploads land under
``device2/<identity>/<name>``; those items are private to their device: other devices
neither list nor download them.  A device's uploads together may hold at most the
connector's ``limits.upload_quota`` bytes (an upload replacing one of its items counts
instead of it): above it the upload is refused ``413`` (reason ``upload_quota``), checked
on ``Content-Length`` before the body is read and on the bytes as they stream in.
"""

from __future__ import annotations

import re

import trio

from gateway.clock import now_us
from gateway.device.http.asgi import (
    CSV_CT,
    Receive,
    Request,
    Send,
    iter_body,
    respond,
    respond_empty,
)
from gateway.device.http.forms import parse_form
from gateway.errors import BadRequest, NotFound, Refused, TooLarge
from gateway.services.bundle import Services
from gateway.services.content import ContentInfo
from gateway.services.devices import DeviceAuth
from gateway.store.api import AppendEvent

__all__ = ["CHUNK", "DEVICE_PREFIX", "download", "parse_range", "upload"]

CHUNK = 64 * 1024  # bytes per read/send of a download
DEVICE_PREFIX = "device2/"
_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def parse_range(header: str | None, total: int) -> tuple[int, int] | bool | None:
    """The byte range ``(first, last)`` (inclusive) a ``Range`` header asks for.

    None: no usable Range (absent, malformed or several ranges: serve the whole file, as
    RFC 9110 §14.2 allows).  False: syntactically fine but unsatisfiable (416).
    """
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if m is None:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or total == 0:
            return False
        return max(0, total - n), total - 1
    first = int(first_s)
    last = int(last_s) if last_s else total - 1
    if last_s and last < first:
        return None
    if first >= total:
        return False
    return first, min(last, total - 1)


def _visible(item_id: str, identity: str) -> bool:
    return not item_id.startswith(DEVICE_PREFIX) or item_id.startswith(
        f"{DEVICE_PREFIX}{identity}/"
    )


async def download(
    services: Services, req: Request, cid: str, auth: DeviceAuth, send: Send
) -> None:
    """``GET /provision/download``: list, ``?id=X&info=true``, or ``?id=X`` (+ ``Range``).
    Legacy ``vendor``/``model`` parameters are ignored."""
    params = dict(parse_form(req.query))
    content_id = params.get("id")
    content = services.content
    if not content_id:
        ids = [i.id for i in await content.list(cid) if _visible(i.id, auth.identity)]
        await respond(send, 200, "\n".join(ids).encode("utf-8"), (CSV_CT,))
        return
    if not _visible(content_id, auth.identity):
        raise NotFound(f"content {content_id!r} not found")
    info = await content.info(cid, content_id)
    if params.get("info", "").lower() == "true":
        line = f"{info.type},{info.length},{info.updated // 1_000_000},{info.description}"
        await respond(send, 200, line.encode("utf-8"), (CSV_CT,))
        return
    await _send_blob(services, req, info, send)


async def _send_blob(services: Services, req: Request, info: ContentInfo, send: Send) -> None:
    total = info.length
    wanted = parse_range(req.header(b"range"), total)
    if wanted is False:
        await respond(send, 416, b"", ((b"content-range", b"bytes */%d" % total),))
        return
    headers = [
        (b"server", b"gateway"),
        (b"content-type", info.type.encode("latin-1")),
        (b"accept-ranges", b"bytes"),
    ]
    if isinstance(wanted, tuple):
        first, last = wanted
        status = 206
        headers.append((b"content-range", b"bytes %d-%d/%d" % (first, last, total)))
    else:
        first, last, status = 0, total - 1, 200
    length = last - first + 1
    headers.append((b"content-length", b"%d" % length))
    path = services.content.blob_path(info)
    try:
        fh = await trio.open_file(path, "rb")
    except OSError as exc:
        raise NotFound(f"content {info.id!r} has no blob: {exc.strerror}") from None
    async with fh:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if req.method == "HEAD" or length <= 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await fh.seek(first)
        remaining = length
        while remaining > 0:
            chunk = await fh.read(min(CHUNK, remaining))
            if not chunk:  # the file shrank under us: end the body short (client sees it)
                break
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        if remaining > 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def upload(
    services: Services, req: Request, cid: str, auth: DeviceAuth, receive: Receive, send: Send
) -> None:
    """``POST /provision/upload?id=<name>``: the raw body becomes content
    ``device2/<identity>/<name>`` (Content-Type kept) with a ``content_in`` event (§12
    item 18).  ``204`` once the blob is on disk and the metadata committed."""
    params = dict(parse_form(req.query))
    name = params.get("id")
    if not name:
        raise BadRequest("upload needs ?id=<name>")
    content_id = f"{DEVICE_PREFIX}{auth.identity}/{name}"
    services.content.check_id(content_id)
    declared = req.content_length()
    if declared is not None and declared > services.content.max_size:
        raise TooLarge(
            f"upload of {declared} bytes is above the limit of {services.content.max_size}"
        )
    allowed = await _quota_left(services, cid, auth, content_id)
    if declared is not None and declared > allowed:
        raise _over_quota(services, cid, declared, allowed)
    ctype = req.header(b"content-type") or "application/octet-stream"
    ts = now_us()
    event = AppendEvent(
        cid,
        "content_in",
        auth.identity,
        req.conn.meta,
        ts,
        payload=[{"id": content_id, "type": ctype}],
    )
    try:
        await services.content.put(
            cid, content_id, iter_body(receive), content_type=ctype, event=event, max_size=allowed
        )
    except TooLarge:
        if allowed >= services.content.max_size:
            raise
        raise _over_quota(services, cid, None, allowed) from None
    await respond_empty(send, 204)


async def _quota_left(services: Services, cid: str, auth: DeviceAuth, content_id: str) -> int:
    """Bytes the device may still upload into ``content_id`` (its other items count)."""
    connector = services.registry.get(cid)
    quota = connector.settings.limits.upload_quota if connector is not None else 0
    prefix = f"{DEVICE_PREFIX}{auth.identity}/"
    used = sum(i.length for i in await services.content.list(cid, prefix) if i.id != content_id)
    return max(0, quota - used)


def _over_quota(services: Services, cid: str, size: int | None, allowed: int) -> Refused:
    services.limits.upload_refused(cid)
    what = "this upload" if size is None else f"an upload of {size} bytes"
    return Refused(
        f"{what} is above the device's upload quota ({allowed} bytes left)",
        reason="upload_quota",
        http_status=413,
    )
