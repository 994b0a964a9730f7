"""Management routes: connectors, their settings and resource definitions."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import BadRequest, NotFound
from gateway.mgmt.common import Endpoint, decode_body, json_response
from gateway.services.bundle import Services
from gateway.services.connectors import Connector, ConnectorSettings, Resource

__all__ = [
    "ConnectorCreate",
    "ConnectorOut",
    "ConnectorPatch",
    "ResourcePatch",
    "endpoints",
    "redact",
]

BASE = "/api/v1/connectors"
ConnectorId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]{4,32}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]


class ConnectorCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Create a connector.  ``id`` is generated (14 characters) when omitted; ``settings``
    may be partial (missing fields take their defaults)."""

    name: Name
    id: ConnectorId | None = None
    description: Description = ""
    settings: ConnectorSettings | None = None
    resources: list[Resource] = []


class ConnectorPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Rename or re-describe a connector (settings have their own route)."""

    name: Name | None = None
    description: Description | None = None


class ConnectorOut(msgspec.Struct, frozen=True):
    """A connector as the API shows it (``settings.pki.server_key`` is write-only)."""

    id: str
    name: str
    description: str
    fqdn: str
    devmode_fqdn: str
    created: int  # µs
    settings: ConnectorSettings
    resources: list[str]


class ResourcePatch(msgspec.Struct, forbid_unknown_fields=True):
    """Change some fields of a resource definition (``alias`` cannot change)."""

    format: Literal["string", "number", "boolean"] | msgspec.UnsetType = msgspec.UNSET
    unit: str | msgspec.UnsetType = msgspec.UNSET
    allowed: list[str | float | int] | msgspec.UnsetType = msgspec.UNSET
    settable: bool | msgspec.UnsetType = msgspec.UNSET
    sync: bool | msgspec.UnsetType = msgspec.UNSET
    initial: str | msgspec.UnsetType | None = msgspec.UNSET


class ConnectorList(msgspec.Struct, frozen=True):
    """Lists share one shape across the API: ``{"items": [...], "next": cursor|null}``."""

    items: list[ConnectorOut]
    next: str | None = None


class ResourceList(msgspec.Struct, frozen=True):
    items: list[Resource]
    next: str | None = None


def redact(settings: ConnectorSettings) -> ConnectorSettings:
    """Hide the private key of the connector's server certificate (write-only)."""
    if settings.pki.server_key is None:
        return settings
    pki = msgspec.structs.replace(settings.pki, server_key="<redacted>")
    return msgspec.structs.replace(settings, pki=pki)


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396-style merge: objects merge recursively, anything else replaces."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def endpoints(services: Services) -> list[Endpoint]:
    reg = services.registry
    conns = services.connectors

    def out(c: Connector) -> ConnectorOut:
        return ConnectorOut(
            c.id,
            c.name,
            c.description,
            c.fqdn,
            c.devmode_fqdn,
            c.created,
            redact(c.settings),
            sorted(reg.resources(c.id)),
        )

    async def list_connectors(request: Request) -> Response:
        return json_response(ConnectorList([out(c) for c in reg.all()]))

    async def create_connector(request: Request) -> Response:
        body = await decode_body(request, ConnectorCreate)
        c = await conns.create(
            name=body.name,
            connector_id=body.id,
            description=body.description,
            settings=body.settings,
            resources=body.resources,
        )
        return json_response(out(c), 201, {"Location": f"{BASE}/{c.id}"})

    async def get_connector(request: Request) -> Response:
        return json_response(out(reg.require(request.path_params["cid"])))

    async def patch_connector(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        body = await decode_body(request, ConnectorPatch)
        c = await conns.update(cid, name=body.name, description=body.description)
        return json_response(out(c))

    async def delete_connector(request: Request) -> Response:
        await conns.delete(request.path_params["cid"])
        return Response(status_code=204)

    async def get_settings(request: Request) -> Response:
        return json_response(redact(reg.require(request.path_params["cid"]).settings))

    async def patch_settings(request: Request) -> Response:
        cid = request.path_params["cid"]
        current = reg.require(cid).settings
        patch = await decode_body(request, dict[str, Any])
        merged = _deep_merge(msgspec.to_builtins(current), patch)
        pki = patch.get("pki")
        if isinstance(pki, dict) and pki.get("server_key") == "<redacted>":
            merged["pki"]["server_key"] = current.pki.server_key  # echoed GET: keep the key
        try:
            settings = msgspec.convert(merged, ConnectorSettings)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid settings: {exc}") from None
        c = await conns.update(cid, settings=settings)
        return json_response(redact(c.settings))

    async def list_resources(request: Request) -> Response:
        res = reg.resources(request.path_params["cid"])
        return json_response(ResourceList([res[a] for a in sorted(res)]))

    async def create_resource(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        body = await decode_body(request, Resource)
        r = await conns.put_resource(cid, body, create=True)
        location = f"{BASE}/{cid}/resources/{quote(r.alias, safe='')}"
        return json_response(r, 201, {"Location": location})

    async def get_resource(request: Request) -> Response:
        cid, alias = request.path_params["cid"], request.path_params["alias"]
        res = reg.resources(cid).get(alias)
        if res is None:
            raise NotFound(f"resource {alias!r} not found")
        return json_response(res)

    async def patch_resource(request: Request) -> Response:
        cid, alias = request.path_params["cid"], request.path_params["alias"]
        current = reg.resources(cid).get(alias)
        if current is None:
            raise NotFound(f"resource {alias!r} not found")
        patch = await decode_body(request, ResourcePatch)
        merged = {
            **msgspec.to_builtins(current),
            **{k: v for k, v in msgspec.structs.asdict(patch).items() if v is not msgspec.UNSET},
        }
        try:
            res = msgspec.convert(merged, Resource)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid resource: {exc}") from None
        return json_response(await conns.put_resource(cid, res, create=False))

    async def delete_resource(request: Request) -> Response:
        await conns.delete_resource(request.path_params["cid"], request.path_params["alias"])
        return Response(status_code=204)

    one = f"{BASE}/{{cid}}"
    res_one = f"{one}/resources/{{alias}}"
    t = "connectors"
    return [
        Endpoint(
            "GET",
            BASE,
            list_connectors,
            "List connectors",
            t,
            "listConnectors",
            response=ConnectorList,
            errors=(),
        ),
        Endpoint(
            "POST",
            BASE,
            create_connector,
            "Create a connector",
            t,
            "createConnector",
            body=ConnectorCreate,
            response=ConnectorOut,
            status=201,
            errors=(400, 409),
            response_headers={"Location": {"type": "string"}},
            creates=("cid", "$response.body#/id"),
        ),
        Endpoint(
            "GET",
            one,
            get_connector,
            "Show a connector",
            t,
            "getConnector",
            response=ConnectorOut,
            errors=(404,),
        ),
        Endpoint(
            "PATCH",
            one,
            patch_connector,
            "Rename or describe a connector",
            t,
            "updateConnector",
            body=ConnectorPatch,
            response=ConnectorOut,
        ),
        Endpoint(
            "DELETE",
            one,
            delete_connector,
            "Delete a connector with its devices, state, events and content",
            t,
            "deleteConnector",
            status=204,
            errors=(404,),
        ),
        Endpoint(
            "GET",
            f"{one}/settings",
            get_settings,
            "Connector settings",
            t,
            "getSettings",
            response=ConnectorSettings,
            errors=(404,),
        ),
        Endpoint(
            "PATCH",
            f"{one}/settings",
            patch_settings,
            "Change settings (partial JSON, deep-merged, validated as a whole)",
            t,
            "updateSettings",
            body=ConnectorSettings,
            response=ConnectorSettings,
        ),
        Endpoint(
            "GET",
            f"{one}/resources",
            list_resources,
            "List resource definitions",
            "resources",
            "listResources",
            response=ResourceList,
            errors=(404,),
        ),
        Endpoint(
            "POST",
            f"{one}/resources",
            create_resource,
            "Define a resource",
            "resources",
            "createResource",
            body=Resource,
            response=Resource,
            status=201,
            errors=(400, 404, 409),
            response_headers={"Location": {"type": "string"}},
            creates=("alias", "$response.body#/alias"),
        ),
        Endpoint(
            "GET",
            res_one,
            get_resource,
            "Show a resource definition",
            "resources",
            "getResource",
            response=Resource,
            errors=(404,),
        ),
        Endpoint(
            "PATCH",
            res_one,
            patch_resource,
            "Change a resource definition",
            "resources",
            "updateResource",
            body=ResourcePatch,
            response=Resource,
        ),
        Endpoint(
            "DELETE",
            res_one,
            delete_resource,
            "Delete a resource definition (and its state)",
            "resources",
            "deleteResource",
            status=204,
            errors=(404,),
        ),
    ]
