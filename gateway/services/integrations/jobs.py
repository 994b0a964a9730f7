"""The asset jobs: sync (assets → devices) and fetch (asset state → ``data_in``).

Sync lists the assets through the configured operation and keeps one device per asset.
The identity is derived from SHA-256 of the asset id and shaped to the connector's identity
format (:func:`identity_for`), so the same asset always maps to the same device and a
re-sync never duplicates.  New devices get tags from configured asset fields and
``config_io`` from the integration's template; assets gone upstream are marked with the tag
``c2c_status=vanished`` (devices are never deleted by a sync) and unmarked if they return.

Fetch reads each asset's state and writes it into the device's ``data_in`` as one JSON
datapoint — through ``services.state.points_for`` and ``device_write`` with
``EventMeta(protocol="c2c")``, exactly as a device write, so state, the event log and the
live log all see it.

Each upstream call is retried with exponential backoff when retrying can help (network
errors, 5xx, 429); a 429's Retry-After is honoured (capped).  Errors are isolated per
asset: one broken asset is counted in the report and the rest proceed.
"""

from __future__ import annotations

import hashlib
import logging
import string
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
import trio

from gateway.clock import now_us
from gateway.errors import AlreadyExists, BadRequest, GatewayError, InvalidValue
from gateway.services.connectors import IdentityFormat
from gateway.services.devices import DeviceAuth, Tag
from gateway.services.integrations import storage
from gateway.services.integrations.bound import Bound
from gateway.services.integrations.context import Collaborators
from gateway.services.integrations.models import AssetError, RunReport
from gateway.services.integrations.operations import CallResult, UpstreamError
from gateway.store.api import EventMeta

__all__ = [
    "STATUS_TAG",
    "call_with_retry",
    "identity_for",
    "map_fields",
    "render_template",
    "run_fetch",
    "run_sync",
]

log = logging.getLogger(__name__)

STATUS_TAG = "c2c_status"  # active | vanished
MAX_TAG_VALUE = 256


def identity_for(asset_id: str, fmt: IdentityFormat) -> str:
    """A stable identity for ``asset_id`` that satisfies ``fmt``: SHA-256 of the id, shaped
    to the format's type, casing and length.  Raises ``InvalidValue`` if no identity of
    that format can be derived (e.g. a prefix with forbidden characters)."""
    digest = hashlib.sha256(asset_id.encode()).digest()
    hexd = digest.hex()
    kind, length = fmt.type, fmt.options.length
    if kind == "base10":
        body = str(int(hexd, 16))
        body = body[:length] if length else body[:40]
    elif kind == "mac:48":
        body = ":".join(hexd[i : i + 2] for i in range(0, 12, 2))
    elif kind == "mac:48-nosep":
        body = hexd[:12]
    elif kind == "uuid:v4":
        body = str(uuid.UUID(bytes=digest[:16], version=4))
    else:  # opaque, base16: hex, as Murano's c2c templates did
        body = hexd[:length] if length else hexd
        if length > len(hexd):
            body = (hexd * (length // len(hexd) + 1))[:length]
    if fmt.options.casing == "upper":
        body = body.upper()
    identity = fmt.prefix + body
    fmt.check(identity)
    return identity


def render_template(template: Any, asset: Mapping[str, Any]) -> Any:
    """Copy ``template`` with ``$field`` / ``${field}`` in strings replaced by asset fields
    (missing fields are left as written)."""
    if isinstance(template, str):
        fields = {k: str(v) for k, v in asset.items() if isinstance(k, str)}
        return string.Template(template).safe_substitute(fields)
    if isinstance(template, list):
        return [render_template(t, asset) for t in template]
    if isinstance(template, dict):
        return {k: render_template(v, asset) for k, v in template.items()}
    return template


def _lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return None
        obj = obj[part]
    return obj


def map_fields(state: Any, field_map: Mapping[str, str]) -> dict[str, Any]:
    """The datapoint written to ``data_in``: ``{key: state[field]}`` for each mapping entry
    (dotted paths reach nested fields; absent fields are left out); with no mapping, every
    top-level scalar of the state."""
    if not isinstance(state, Mapping):
        raise UpstreamError("asset state is not a JSON object", code="upstream_response_invalid")
    if not field_map:
        return {k: v for k, v in state.items() if isinstance(v, str | int | float | bool)}
    out = {}
    for key, field in field_map.items():
        value = _lookup(state, field)
        if value is not None:
            out[key] = value
    return out


async def call_with_retry(
    bound: Bound, operation: str, params: Mapping[str, Any], report: RunReport
) -> CallResult:
    """``bound.call`` with retries: exponential backoff from ``backoff_s`` (capped at
    ``max_backoff_s``), or the upstream's Retry-After when it sent one (capped at
    ``max_retry_after_s``).  Raises the last error when attempts run out."""
    s = bound.settings
    delay = s.backoff_s
    attempt = 0
    while True:
        try:
            result: CallResult = await bound.call(operation, params)
            return result
        except UpstreamError as exc:
            if not exc.retryable or attempt >= s.retries:
                raise
            wait = delay if exc.retry_after is None else min(exc.retry_after, s.max_retry_after_s)
            log.info(
                "integration %s/%s: %s; retry %d/%d in %.2fs",
                bound.connector_id,
                bound.name,
                exc.message,
                attempt + 1,
                s.retries,
                wait,
            )
            report.retries += 1
            attempt += 1
            await trio.sleep(wait)
            delay = min(delay * 2, s.max_backoff_s)


def _asset_list(result: CallResult, assets_field: str | None) -> list[Any]:
    body = result.body
    if assets_field and isinstance(body, Mapping):
        body = _lookup(body, assets_field)
    if not isinstance(body, list):
        raise UpstreamError(
            "the asset listing is not a JSON array"
            + ("" if assets_field else " (set assets_field for an object)"),
            code="upstream_response_invalid",
        )
    return body


def _tags(bound: Bound, asset_id: str, asset: Mapping[str, Any]) -> list[Tag]:
    tags = [
        Tag("integration", bound.name),
        Tag("asset_id", asset_id[:MAX_TAG_VALUE]),
        Tag(STATUS_TAG, "active"),
    ]
    for field in bound.settings.tag_fields:
        value = _lookup(asset, field)
        if value is not None:
            text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
            tags.append(Tag(field, text[:MAX_TAG_VALUE]))
    return tags


async def run_sync(service: Collaborators, bound: Bound, report: RunReport) -> None:
    """One asset sync; fills ``report``.  Raises when the listing itself fails."""
    services = service  # the registry, devices and state it was built with
    cid, name, s = bound.connector_id, bound.name, bound.settings
    connector = services.registry.require(cid)
    fmt = connector.settings.identity_format
    if s.sync_operation is None:
        raise BadRequest("the sync job is off: settings.sync_operation is null")
    listing = _asset_list(
        await call_with_retry(bound, s.sync_operation, {}, report), s.assets_field
    )
    known = {a.asset_id: a for a in await storage.load_assets(service.store, cid, name)}
    seen: set[str] = set()
    has_config_io = "config_io" in services.registry.resources(cid)
    for asset in listing:
        raw_id = _lookup(asset, s.asset_id_field) if isinstance(asset, Mapping) else None
        if raw_id is None or isinstance(raw_id, dict | list):
            report.failed += 1
            report.errors.append(
                AssetError("?", f"asset without a scalar {s.asset_id_field!r} field")
            )
            continue
        asset_id = str(raw_id)
        if asset_id in seen:
            continue
        seen.add(asset_id)
        report.seen += 1
        assert isinstance(asset, Mapping)
        try:
            identity = identity_for(asset_id, fmt)
            tags = _tags(bound, asset_id, asset)
            created = False
            try:
                await services.devices.add(cid, identity, tags=tags)
                created = True
            except AlreadyExists:
                await services.devices.set_tags(cid, identity, tags, replace=True)
            if created and has_config_io and s.config_io_template is not None:
                value = render_template(s.config_io_template, asset)
                await services.state.set_values(
                    cid, identity, {"config_io": value}, meta=EventMeta(protocol="c2c")
                )
            await storage.upsert_asset(service.store, cid, name, asset_id, identity, now_us())
            if created:
                report.created += 1
            else:
                report.updated += 1
        except (GatewayError, ValueError) as exc:
            report.failed += 1
            report.errors.append(AssetError(asset_id, _message(exc)))
    gone = [a for a in known.values() if a.asset_id not in seen and not a.vanished]
    for a in gone:
        try:
            await services.devices.set_tags(
                cid, a.identity, [Tag(STATUS_TAG, "vanished")], replace=True
            )
        except GatewayError as exc:  # the operator may have deleted the device
            report.errors.append(AssetError(a.asset_id, f"marking vanished: {exc.message}"))
    if gone:
        await storage.mark_vanished(service.store, cid, name, [a.asset_id for a in gone])
    report.vanished = len(gone)


async def run_fetch(service: Collaborators, bound: Bound, report: RunReport) -> None:
    """One asset fetch; fills ``report``.  Assets are fetched ``concurrency`` at a time."""
    services = service  # the registry, devices and state it was built with
    cid, name, s = bound.connector_id, bound.name, bound.settings
    operation = s.fetch_operation
    if operation is None:
        raise BadRequest("the fetch job is off: settings.fetch_operation is null")
    if s.data_alias not in services.registry.resources(cid):
        raise BadRequest(f"resource {s.data_alias!r} is not defined on connector {cid!r}")
    assets = [a for a in await storage.load_assets(service.store, cid, name) if not a.vanished]
    limiter = trio.CapacityLimiter(s.concurrency)
    meta = EventMeta(connection_id=f"c2c:{name}", protocol="c2c")

    async def one(asset_id: str, identity: str) -> None:
        async with limiter:
            report.seen += 1
            try:
                result = await call_with_retry(
                    bound, operation, {s.fetch_id_parameter: asset_id}, report
                )
                values = map_fields(result.body, s.field_map)
                text = msgspec.json.encode(values).decode()
                points = services.state.points_for(cid, [(s.data_alias, text, now_us())])
                did = await services.devices.device_id(cid, identity)
                await services.state.device_write(DeviceAuth(cid, did, identity), points, meta)
                report.updated += 1
            except (GatewayError, InvalidValue) as exc:
                report.failed += 1
                report.errors.append(AssetError(asset_id, _message(exc)))

    async with trio.open_nursery() as nursery:
        for a in assets:
            nursery.start_soon(one, a.asset_id, a.identity)


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, GatewayError) else str(exc)
