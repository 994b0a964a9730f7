"""Management routes: device identities (whitelist, bulk import, listing, lock, tags,
credentials reset, delete) and their state (reported and set values)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from gateway.errors import BadRequest
from gateway.mgmt.common import (
    Endpoint,
    QueryParam,
    decode_body,
    json_response,
    q_bool,
    q_int,
    q_str,
    read_body_limited,
)
from gateway.services.bundle import Services
from gateway.services.devices import (
    MAX_TAG_LENGTH,
    SORT_KEYS,
    STATUSES,
    Device,
    ImportReport,
    Tag,
)
from gateway.services.devices import TagRef as RemoveTag
from gateway.services.state import AliasState

__all__ = [
    "DeviceAdd",
    "DeviceAuthIn",
    "DevicePage",
    "DevicePatch",
    "TagChange",
    "TagRef",
    "endpoints",
]

MAX_CSV_BYTES = 64 * 1_048_576  # 10,000 rows with PEM certificates fit with room to spare


def _anycase(word: str) -> str:
    """``word`` (letters, spaces, colons) in any letter case, as a pattern Python and
    ECMA-262 read alike (the latter has no inline flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# What gateway/services/devices/importer.py takes as a CSV (else 400 before any row): a
# header whose first column is ID, then Certificate and tag:<name> columns (any case,
# spaces around; an empty one is skipped).  Rows are free: a bad one is reported by line
# in the 200 answer, not refused as a whole.  ``[^\S\r\n]``: the spaces str.strip() drops.
_SP = r"[^\S\r\n]*"
_COLUMN = "|".join(
    [
        _anycase("certificate"),
        _anycase("ssl client certificate"),
        _anycase("tag:") + r'[^,\r\n"]*[^,\s"][^,\r\n"]*',
    ]
)
CSV_PATTERN = rf"^{_SP}{_anycase('id')}{_SP}(,{_SP}({_COLUMN})?{_SP})*(\r?\n[\s\S]*)?$"

Identity = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TagName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG_LENGTH)]
TagValue = Annotated[str, msgspec.Meta(max_length=MAX_TAG_LENGTH)]


class TagIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: TagName
    value: TagValue


class DeviceAuthIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Pre-shared credentials: a token (≥ 20 characters), a password (≥ 20 characters) or a
    PEM certificate to pin.  The device is then provisioned without activating."""

    type: Literal["token", "password", "certificate"]
    key: Annotated[str, msgspec.Meta(min_length=20, max_length=65536)]


class DeviceAdd(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whitelist an identity (``addIdentity``)."""

    identity: Identity
    auth: DeviceAuthIn | None = None
    locked: bool = False
    tags: Annotated[list[TagIn], msgspec.Meta(max_length=256)] = []
    expire: Annotated[int, msgspec.Meta(ge=0)] | None = None  # activation window end, µs


class TagRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tag to remove: one value of ``name``, or every value when ``value`` is null."""

    name: TagName
    value: TagValue | None = None


class TagChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Tag edits, applied in this order: with ``replace`` the names in ``add`` first lose
    all their values; then ``add`` is added; then ``remove`` is removed."""

    add: Annotated[list[TagIn], msgspec.Meta(max_length=256)] = []
    remove: Annotated[list[TagRef], msgspec.Meta(max_length=256)] = []
    replace: bool = False


class DevicePatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Change a device.  ``locked`` refuses its connections and activations;
    ``reprovision: true`` revokes its credentials (it must activate again)."""

    locked: bool | None = None
    reprovision: bool | None = None
    tags: TagChange | None = None


class DevicePage(msgspec.Struct, frozen=True):
    """One page of devices; pass ``next`` as ``cursor`` for the next page (null: the end)."""

    items: list[Device]
    next: str | None


def _parse_tag_filter(raw: str) -> Tag:
    name, sep, value = raw.partition(":")
    if not sep or not name:
        raise BadRequest(f"tag filter {raw!r} must look like name:value")
    return Tag(name, value)


async def _replayed_form_field(request: Request, body: bytes, field: str) -> str:
    """Parse a multipart body already read (with its size limit) and return ``field``."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        async with replay.form(max_files=4, max_fields=16) as form:
            item = form.get(field)
            if item is None:
                raise BadRequest(f"multipart body has no {field!r} field")
            data = item if isinstance(item, str) else await item.read()
    except (ValueError, KeyError) as exc:  # python-multipart's parse errors
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the CSV must be UTF-8") from None


def endpoints(services: Services) -> list[Endpoint]:
    reg = services.registry
    devs = services.devices

    def ids(request: Request) -> tuple[str, str]:
        return request.path_params["cid"], request.path_params["identity"]

    async def list_devices(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        tags = [_parse_tag_filter(t) for t in request.query_params.getlist("tag")]
        items, nxt = await devs.list(
            cid,
            q=q_str(request, "q"),
            status=q_str(request, "status"),
            tags=tags,
            sort=request.query_params.get("sort", "identity"),
            cursor=q_str(request, "cursor", max_length=4096),
            limit=q_int(request, "limit", 100, lo=1, hi=1000),
        )
        return json_response(DevicePage(items, nxt))

    async def add_device(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        body = await decode_body(request, DeviceAdd)
        dev = await devs.add(
            cid,
            body.identity,
            auth_type=body.auth.type if body.auth else None,
            key=body.auth.key if body.auth else None,
            locked=body.locked,
            tags=[Tag(t.name, t.value) for t in body.tags],
            expire=body.expire,
        )
        return json_response(dev, 201)

    async def import_devices(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        dry_run = q_bool(request, "dry_run", False)
        all_or_nothing = q_bool(request, "all_or_nothing", True)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw = await read_body_limited(request, MAX_CSV_BYTES)
        if ctype == "multipart/form-data":
            text = await _replayed_form_field(request, raw, "identities")
        elif ctype in ("text/csv", "text/plain", "application/csv", ""):
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise BadRequest("the CSV must be UTF-8") from None
        else:
            raise BadRequest(
                f"send text/csv or multipart/form-data (field 'identities'), not {ctype!r}"
            )
        report = await devs.import_csv(cid, text, dry_run=dry_run, all_or_nothing=all_or_nothing)
        return json_response(report)

    async def get_device(request: Request) -> Response:
        return json_response(await devs.get(*ids(request)))

    async def patch_device(request: Request) -> Response:
        cid, identity = ids(request)
        body = await decode_body(request, DevicePatch)
        change = body.tags or TagChange()
        # one submission: the lock, the credentials and every tag edit apply together or not
        dev = await devs.update(
            cid,
            identity,
            locked=body.locked,
            reprovision=body.reprovision,
            add_tags=[Tag(t.name, t.value) for t in change.add],
            remove_tags=[RemoveTag(r.name, r.value) for r in change.remove],
            replace_tags=change.replace,
        )
        # A locked device, or one whose credentials were revoked, loses its MQTT sessions
        # and long-polls now, on whichever process holds them: the committed ``locked`` /
        # ``reprovision`` event does it (services/control.py, docs/protocol.md §5.4).
        return json_response(dev)

    async def delete_device(request: Request) -> Response:
        cid, identity = ids(request)
        reg.require(cid)
        await devs.delete(cid, identity)  # the committed ``deleted`` event ends its sessions
        return Response(status_code=204)

    async def get_state(request: Request) -> Response:
        return json_response(await services.state.get(*ids(request)))

    async def patch_state(request: Request) -> Response:
        cid, identity = ids(request)
        reg.require(cid)
        values = await decode_body(request, dict[str, Any])
        await devs.get(cid, identity)  # unknown device: 404 before values are checked
        return json_response(await services.state.set_values(cid, identity, values))

    base = "/api/v1/connectors/{cid}/devices"
    one = f"{base}/{{identity}}"
    t = "devices"
    list_query = (
        QueryParam("q", {"type": "string", "maxLength": 1024}, "identity prefix"),
        QueryParam("status", {"enum": list(STATUSES)}, "only devices in this status"),
        QueryParam(
            "tag",
            {"type": "string", "pattern": "^[^:]+:.*$"},
            "name:value; repeat for several (all must match)",
            repeated=True,
        ),
        QueryParam(
            "sort",
            {"enum": [*SORT_KEYS, *(f"-{k}" for k in SORT_KEYS)]},
            "sort key, '-' prefix for descending [identity]",
        ),
        QueryParam(
            "cursor", {"type": "string", "maxLength": 4096}, "the 'next' value of the previous page"
        ),
        QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size [100]"),
    )
    bool_q = {"type": "boolean"}
    return [
        Endpoint(
            "GET",
            base,
            list_devices,
            "List devices (search, filter, cursor paging)",
            t,
            "listDevices",
            response=DevicePage,
            query=list_query,
        ),
        Endpoint(
            "POST",
            base,
            add_device,
            "Whitelist (or pre-provision) a device",
            t,
            "addDevice",
            body=DeviceAdd,
            response=Device,
            status=201,
            errors=(400, 404, 409, 413),
            creates=("identity", "$response.body#/identity"),
        ),
        Endpoint(
            "POST",
            f"{base}/import",
            import_devices,
            "Bulk whitelist from CSV (header ID[,Certificate][,tag:<name>...])",
            t,
            "importDevices",
            response=ImportReport,
            body_media={
                "text/csv": {"type": "string", "pattern": CSV_PATTERN},
                "multipart/form-data": {
                    "type": "object",
                    "required": ["identities"],
                    "properties": {
                        "identities": {
                            "type": "string",
                            "contentMediaType": "text/csv",
                            "pattern": CSV_PATTERN,
                        }
                    },
                },
            },
            query=(
                QueryParam("dry_run", bool_q, "validate only [false]"),
                QueryParam("all_or_nothing", bool_q, "any row error writes nothing [true]"),
            ),
            errors=(400, 404, 413),
            description="Rows with errors are reported by line in the answer.",
        ),
        Endpoint(
            "GET", one, get_device, "Show a device", t, "getDevice", response=Device, errors=(404,)
        ),
        Endpoint(
            "PATCH",
            one,
            patch_device,
            "Lock/unlock, reset credentials, edit tags",
            t,
            "updateDevice",
            body=DevicePatch,
            response=Device,
        ),
        Endpoint(
            "DELETE",
            one,
            delete_device,
            "Delete a device and its state",
            t,
            "deleteDevice",
            status=204,
            errors=(404,),
        ),
        Endpoint(
            "GET",
            f"{one}/state",
            get_state,
            "Reported and set values",
            "state",
            "getState",
            response=dict[str, AliasState],
            errors=(404,),
        ),
        Endpoint(
            "PATCH",
            f"{one}/state",
            patch_state,
            "Set values (pushed to a connected MQTT session, wakes long-polls)",
            "state",
            "setState",
            body=dict[str, Any],
            response=dict[str, AliasState],
        ),
    ]
