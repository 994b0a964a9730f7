"""A small synchronous client of the management REST API (httpx), used by the CLI.

Every method maps to one route of docs/architecture.md's table and returns decoded JSON (plain
data: the CLI prints it as a table or as JSON).  Errors in the API's error shape are raised
as :class:`ApiError` carrying the status, code and message; transport failures as
``httpx.HTTPError``.  Uploads and downloads stream, so 100 MB+ files never sit in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
import msgspec

__all__ = ["DEFAULT_API", "ApiError", "Client", "read_token"]

DEFAULT_API = "http://127.0.0.1:9080"
CHUNK = 1 << 20  # bytes per upload/download chunk


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def read_token(data_dir: str | os.PathLike[str]) -> str:
    """The admin token a gateway wrote to ``DIR/admin.token``."""
    return (Path(data_dir) / "admin.token").read_text().strip()


def _seg(value: str) -> str:
    return quote(value, safe="")


class Client:
    def __init__(
        self, api: str = DEFAULT_API, token: str | None = None, *, timeout: float = 60.0
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=api.rstrip("/"), headers=headers, timeout=httpx.Timeout(timeout, connect=10.0)
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------

    @staticmethod
    def _check(r: httpx.Response) -> None:
        if r.status_code < 400:
            return
        try:
            body = msgspec.json.decode(r.read())
            code, message = body["error"], body["message"]
        except (msgspec.DecodeError, KeyError, TypeError):
            code, message = "http_error", r.text[:500]
        raise ApiError(r.status_code, code, message)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        self._check(r)
        if r.status_code == 204 or not r.content:
            return None
        return msgspec.json.decode(r.content)

    # -- connectors and resources -----------------------------------------------------

    def connectors(self) -> Any:
        return self.request("GET", "/api/v1/connectors")["items"]

    def create_connector(self, body: dict[str, Any]) -> Any:
        return self.request("POST", "/api/v1/connectors", json=body)

    def connector(self, cid: str) -> Any:
        return self.request("GET", f"/api/v1/connectors/{_seg(cid)}")

    def update_connector(self, cid: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", f"/api/v1/connectors/{_seg(cid)}", json=body)

    def delete_connector(self, cid: str) -> None:
        self.request("DELETE", f"/api/v1/connectors/{_seg(cid)}")

    def settings(self, cid: str, patch: dict[str, Any] | None = None) -> Any:
        path = f"/api/v1/connectors/{_seg(cid)}/settings"
        if patch is None:
            return self.request("GET", path)
        return self.request("PATCH", path, json=patch)

    def resources(self, cid: str) -> Any:
        return self.request("GET", f"/api/v1/connectors/{_seg(cid)}/resources")["items"]

    def create_resource(self, cid: str, body: dict[str, Any]) -> Any:
        return self.request("POST", f"/api/v1/connectors/{_seg(cid)}/resources", json=body)

    def update_resource(self, cid: str, alias: str, body: dict[str, Any]) -> Any:
        return self.request(
            "PATCH", f"/api/v1/connectors/{_seg(cid)}/resources/{_seg(alias)}", json=body
        )

    def delete_resource(self, cid: str, alias: str) -> None:
        self.request("DELETE", f"/api/v1/connectors/{_seg(cid)}/resources/{_seg(alias)}")

    # -- devices ------------------------------------------------------------------------

    def _dev(self, cid: str, identity: str = "") -> str:
        base = f"/api/v1/connectors/{_seg(cid)}/devices"
        return f"{base}/{_seg(identity)}" if identity else base

    def devices(self, cid: str, **params: Any) -> Any:
        return self.request(
            "GET", self._dev(cid), params={k: v for k, v in params.items() if v not in (None, [])}
        )

    def iter_devices(self, cid: str, **params: Any) -> Iterator[Any]:
        cursor = None
        while True:
            page = self.devices(cid, cursor=cursor, **params)
            yield from page["items"]
            cursor = page["next"]
            if cursor is None:
                return

    def add_device(self, cid: str, body: dict[str, Any]) -> Any:
        return self.request("POST", self._dev(cid), json=body)

    def import_devices(
        self,
        cid: str,
        csv_file: BinaryIO,
        *,
        size: int,
        dry_run: bool = False,
        all_or_nothing: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        return self.request(
            "POST",
            f"{self._dev(cid)}/import",
            params={"dry_run": str(dry_run).lower(), "all_or_nothing": str(all_or_nothing).lower()},
            content=_chunks(csv_file, progress),
            headers={"Content-Type": "text/csv", "Content-Length": str(size)},
        )

    def device(self, cid: str, identity: str) -> Any:
        return self.request("GET", self._dev(cid, identity))

    def update_device(self, cid: str, identity: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", self._dev(cid, identity), json=body)

    def delete_device(self, cid: str, identity: str) -> None:
        self.request("DELETE", self._dev(cid, identity))

    def state(self, cid: str, identity: str, values: dict[str, Any] | None = None) -> Any:
        path = f"{self._dev(cid, identity)}/state"
        if values is None:
            return self.request("GET", path)
        return self.request("PATCH", path, json=values)

    # -- content --------------------------------------------------------------------------

    def _content(self, cid: str, content_id: str = "") -> str:
        base = f"/api/v1/connectors/{_seg(cid)}/content"
        return f"{base}/{quote(content_id, safe='/')}" if content_id else base

    def content_list(self, cid: str, prefix: str = "") -> Any:
        return self.request("GET", self._content(cid), params={"prefix": prefix})["items"]

    def content_info(self, cid: str, content_id: str) -> Any:
        return self.request("GET", self._content(cid, content_id), params={"info": "true"})

    def upload(
        self,
        cid: str,
        content_id: str,
        fh: BinaryIO,
        *,
        size: int,
        content_type: str = "application/octet-stream",
        description: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        params = {"description": description} if description else {}
        return self.request(
            "PUT",
            self._content(cid, content_id),
            params=params,
            content=_chunks(fh, progress),
            headers={"Content-Type": content_type, "Content-Length": str(size)},
        )

    def download(
        self,
        cid: str,
        content_id: str,
        out: BinaryIO,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        n = 0
        with self.http.stream("GET", self._content(cid, content_id)) as r:
            self._check(r)
            for chunk in r.iter_bytes(CHUNK):
                out.write(chunk)
                n += len(chunk)
                if progress:
                    progress(len(chunk))
        return n

    def delete_content(self, cid: str, content_id: str) -> None:
        self.request("DELETE", self._content(cid, content_id))

    # -- events, logs, tokens -------------------------------------------------------------

    def events(self, cid: str, *, after: int = 0, limit: int = 100, wait: float = 0.0) -> Any:
        return self.request(
            "GET",
            f"/api/v1/connectors/{_seg(cid)}/events",
            params={"after": after, "limit": limit, "wait": wait},
            timeout=wait + 30.0,
        )

    def logs(self, cid: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """Yield ``(event, data)`` from the SSE tail until the server ends the stream."""
        query = {k: v for k, v in params.items() if v is not None}
        with self.http.stream(
            "GET",
            f"/api/v1/connectors/{_seg(cid)}/logs",
            params=query,
            timeout=httpx.Timeout(10.0, read=None),
        ) as r:
            self._check(r)
            event, data = "message", ""
            for line in r.iter_lines():
                if not line:
                    if data:
                        yield event, msgspec.json.decode(data)
                    event, data = "message", ""
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()

    def tokens(self) -> Any:
        return self.request("GET", "/api/v1/tokens")

    def create_token(self, name: str) -> Any:
        return self.request("POST", "/api/v1/tokens", json={"name": name})

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/api/v1/tokens/{_seg(token_id)}")

    def health(self) -> Any:
        return self.request("GET", "/api/v1/health")


def _chunks(fh: BinaryIO, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        if progress:
            progress(len(chunk))
        yield chunk
