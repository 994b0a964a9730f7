"""Content (firmware and files for devices): metadata in the store, blobs on disk.

Blobs are content-addressed (``DIR/content/<sha256>``): an upload streams into a temporary
file while hashing, is fsynced and renamed into place, and only then is the metadata
committed — so a listed item always has its bytes, and identical files are stored once.  A
blob is removed when the last item referencing it goes.

On a full disk an upload fails with :class:`~gateway.errors.StorageFull` (HTTP 507) and
leaves nothing behind: the temporary file is removed, and so is a blob this upload put in
place when its metadata then could not be committed.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path

import msgspec
import trio

from gateway.clock import now_us
from gateway.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    StorageFull,
    TooLarge,
    is_disk_full,
)
from gateway.services.connectors import Registry
from gateway.store.api import AppendEvent, ContentRow, DeleteContent, PutContent, Store

__all__ = ["CONTENT_ID_PATTERN", "ContentInfo", "ContentService", "TooLarge"]

# Slash-separated segments of letters, digits, ``. _ -`` that do not start with a dot, no
# ``..`` anywhere, at most 200 characters (the OpenAPI document publishes the same pattern).
CONTENT_ID_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
CONTENT_ID_RE = re.compile(CONTENT_ID_PATTERN)
DEFAULT_MAX_CONTENT = 2 * 1024**3  # bytes


class ContentInfo(msgspec.Struct, frozen=True):
    id: str
    type: str
    length: int
    sha256: str
    description: str
    updated: int  # µs
    tags: dict[str, str]


class ContentService:
    def __init__(
        self, store: Store, registry: Registry, root: Path, *, max_size: int = DEFAULT_MAX_CONTENT
    ) -> None:
        self.store = store
        self.registry = registry
        self.root = root
        self.max_size = max_size
        root.mkdir(parents=True, exist_ok=True)

    def blob_path(self, info: ContentInfo) -> Path:
        return self.root / info.sha256

    @staticmethod
    def check_id(content_id: str) -> None:
        if len(content_id) > 200 or not CONTENT_ID_RE.match(content_id):
            raise BadRequest(
                "content id must be 1-200 characters: '/'-separated segments of letters, "
                "digits, '.', '_' and '-' that do not start with '.'"
            )

    async def list(self, cid: str, prefix: str = "") -> list[ContentInfo]:
        self.registry.require(cid)
        return [_info(r) for r in await self.store.content_list(cid, prefix)]

    async def info(self, cid: str, content_id: str) -> ContentInfo:
        self.registry.require(cid)
        row = await self.store.content(cid, content_id)
        if row is None:
            raise NotFound(f"content {content_id!r} not found")
        return _info(row)

    async def put(
        self,
        cid: str,
        content_id: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        description: str = "",
        tags: dict[str, str] | None = None,
        event: AppendEvent | None = None,
    ) -> ContentInfo:
        """Stream ``chunks`` into the store; replaces an item with the same id."""
        self.registry.require(cid)
        self.check_id(content_id)
        if len(content_type) > 200 or "\n" in content_type or "," in content_type:
            raise BadRequest("invalid content type")
        if len(description) > 1000 or "\n" in description:
            raise BadRequest("description must be one line of at most 1000 characters")
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        except OSError as exc:
            if is_disk_full(exc):
                raise _storage_full(exc) from None
            raise
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = 0
        try:
            async with await trio.open_file(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_size:
                        raise TooLarge(f"content larger than {self.max_size} bytes")
                    digest.update(chunk)
                    await fh.write(chunk)
                await fh.flush()
                await trio.to_thread.run_sync(os.fsync, fh.fileno())
            sha = digest.hexdigest()
            blob = trio.Path(self.root / sha)
            new_blob = not await blob.exists()
            await trio.to_thread.run_sync(os.replace, tmp, blob)
        except OSError as exc:
            with trio.CancelScope(shield=True):
                await trio.Path(tmp).unlink(missing_ok=True)
            if is_disk_full(exc):
                raise _storage_full(exc) from None
            raise
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.Path(tmp).unlink(missing_ok=True)
            raise
        ts = now_us()
        op = PutContent(
            cid, content_id, sha, size, content_type, description, tags or {}, ts, event
        )
        try:
            (orphan,) = await self.store.write([op])
        except GatewayError:
            if new_blob:  # no item refers to it (an identical upload racing this one aside)
                with trio.CancelScope(shield=True):
                    await blob.unlink(missing_ok=True)
            raise
        if isinstance(orphan, str):
            (self.root / orphan).unlink(missing_ok=True)
        return ContentInfo(content_id, content_type, size, sha, description, ts, tags or {})

    async def delete(self, cid: str, content_id: str) -> None:
        self.registry.require(cid)
        (orphan,) = await self.store.write([DeleteContent(cid, content_id)])
        if isinstance(orphan, str):
            (self.root / orphan).unlink(missing_ok=True)


def _storage_full(exc: OSError) -> StorageFull:
    return StorageFull(f"the gateway's disk is full: the upload was not stored ({exc.strerror})")


def _info(row: ContentRow) -> ContentInfo:
    return ContentInfo(
        row.content_id,
        row.content_type,
        row.size,
        row.sha256,
        row.description,
        row.updated,
        row.tags,
    )
