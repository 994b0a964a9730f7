"""The OpenAPI 3.1 document of the management API, generated from the endpoint list.

Schemas come from the same msgspec types the handlers decode and encode
(``msgspec.json.schema_components``), so a request the document calls valid is one the
decoder accepts, field for field.  A few service-level rules that the service Structs do
not carry as constraints (identity format names, length ranges) are added here, in
:data:`_REFINEMENTS`, so generated clients and fuzzers know them too.

Links (OpenAPI 3 ``links`` on the success response) say how the answer of one operation
feeds the parameters of others, so a client, and schemathesis' stateful phase, can chain
them: create a connector, then read, change and delete it, add a device to it, and so on.
They are derived from each endpoint's ``creates`` (:func:`_derived_links`): the answer of
a creating route links to every route under the path it created, with the new name from
the answer and the other path parameters from the request (a device added to connector
``cid`` is reached under that same ``cid``).  An endpoint's own ``links`` add what no
creation gives (the name of a job or an operation, read from an integration's answer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway import __version__
from gateway.mgmt.common import Endpoint, ErrorBody, Link
from gateway.rules.identity import IDENTITY_TYPES
from gateway.services.content import CONTENT_ID_PATTERN

__all__ = ["PEM_CERTIFICATE_CHAIN", "PEM_PRIVATE_KEY", "build_document"]

PEM_CERTIFICATE_CHAIN = "x-pem-certificate-chain"  # a certificate, then its intermediates
PEM_PRIVATE_KEY = "x-pem-private-key"  # the key of the chain's first certificate

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    206: "Partial Content",
    400: "Bad request (malformed JSON, wrong types, unknown fields, invalid values)",
    401: "Missing or invalid admin token",
    404: "Unknown connector, device or item",
    405: "Method not allowed",
    409: "Already exists",
    413: "Body above the size limit",
    416: "Range not satisfiable",
}
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "cid": {"type": "string", "minLength": 1, "maxLength": 64},
    "identity": {"type": "string", "minLength": 1, "maxLength": 128},
    "alias": {"type": "string", "minLength": 1, "maxLength": 64},
    "content_id": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": CONTENT_ID_PATTERN,
    },
    "token_id": {"type": "string", "minLength": 1, "maxLength": 64},
}
# Service-level rules expressed in the schema (component name -> property -> keywords).
_REFINEMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "IdentityFormat": {"type": {"enum": list(IDENTITY_TYPES)}},
    "IdentityFormatOptions": {"length": {"minimum": 0, "maximum": 128}},
    "Limits": {"max_payload": {"minimum": 64, "maximum": 64 * 1_048_576}},
    # Python's \s also matches \x1c-\x1f and \x85, ECMA-262's does not: name them.
    "Resource": {"alias": {"pattern": r"^[^.$/+#\s\x1c-\x1f\x85]{1,64}$"}},
    # Every identity, whatever the connector's format (gateway/_pure/identity.py): printable
    # ASCII without / + # (they would break MQTT topics); the format narrows it further.
    "DeviceAdd": {"identity": {"pattern": '^[!"$-*,-.0-~]{1,128}$'}},
    # PEM text is checked by parsing it (a key of another certificate, an expired one:
    # 400), which no JSON schema can say; the formats name what the text must be, and a
    # client or fuzzer that knows them (tests/e2e/schemathesis_hooks.py) sends real ones.
    "PkiSettings": {
        "server_cert": {"format": PEM_CERTIFICATE_CHAIN},
        "server_key": {"format": PEM_PRIVATE_KEY},
    },
}
# PkiSettings.validate: a CA when enabled; the server certificate and key go together.
_PKI_RULES: list[dict[str, Any]] = [
    {
        "if": {"properties": {"enabled": {"const": True}}, "required": ["enabled"]},
        "then": {
            "properties": {"client_ca": {"type": "string", "minLength": 1}},
            "required": ["client_ca"],
        },
    },
    {
        "anyOf": [
            {"properties": {"server_cert": {"type": "null"}, "server_key": {"type": "null"}}},
            {
                "properties": {
                    "server_cert": {
                        "type": "string",
                        "minLength": 1,
                        "format": PEM_CERTIFICATE_CHAIN,
                    },
                    "server_key": {"type": "string", "minLength": 1, "format": PEM_PRIVATE_KEY},
                },
                "required": ["server_cert", "server_key"],
            },
        ]
    },
]
_NUMBER_RANGE = r"^[0-9]+(\.[0-9]+)?-[0-9]+(\.[0-9]+)?$"
# Whole-object rules of a resource definition (gateway.services.connectors._check_resource).
_RESOURCE_RULES: list[dict[str, Any]] = [
    {
        "if": {"not": {"properties": {"settable": {"const": True}}, "required": ["settable"]}},
        "then": {"properties": {"initial": {"type": "null"}}},
    },
    {
        "if": {"properties": {"format": {"const": "boolean"}}, "required": ["format"]},
        "then": {"properties": {"allowed": {"maxItems": 0}}},
    },
    {
        "if": {"properties": {"format": {"const": "number"}}, "required": ["format"]},
        "then": {
            "properties": {
                "allowed": {
                    "items": {
                        "anyOf": [{"type": "number"}, {"type": "string", "pattern": _NUMBER_RANGE}]
                    }
                }
            }
        },
        "else": {"properties": {"allowed": {"items": {"type": "string"}}}},
    },
]


def _created_path(ep: Endpoint) -> str:
    """The path template of what ``ep`` creates: up to ``{param}`` when the route names it
    itself (an upsert by PUT), else the route's path plus ``/{param}``."""
    assert ep.creates is not None
    path = _PATH_PARAM.sub(r"{\1}", ep.path)
    mark = "{" + ep.creates[0] + "}"
    if mark in path:
        return path[: path.index(mark) + len(mark)]
    return f"{path}/{mark}"


def _derived_links(endpoints: Sequence[Endpoint]) -> dict[str, list[Link]]:
    """operationId -> the links of its success answer: its own ``links``, then one to every
    other operation under the path it creates.  A target's path parameters come from the
    creating request (same name) or its ``creates`` expression; one that neither gives
    (a job name) is left to the client."""
    out: dict[str, list[Link]] = {ep.operation_id: list(ep.links) for ep in endpoints}
    for ep in endpoints:
        if ep.creates is None:
            continue
        param, value = ep.creates
        created = _created_path(ep)
        own = set(_PATH_PARAM.findall(ep.path))
        for target in endpoints:
            path = _PATH_PARAM.sub(r"{\1}", target.path)
            if target is ep or not (path == created or path.startswith(created + "/")):
                continue
            params = {
                p: value if p == param else f"$request.path.{p}"
                for p in _PATH_PARAM.findall(target.path)
                if p == param or p in own
            }
            out[ep.operation_id].append(Link(target.operation_id, params))
    return out


def _collect_types(endpoints: Sequence[Endpoint]) -> list[Any]:
    types: list[Any] = [ErrorBody]
    types.extend(t for ep in endpoints for t in (ep.body, ep.response) if t is not None)
    return types


def build_document(
    endpoints: Sequence[Endpoint], *, extra_types: Sequence[Any] = ()
) -> dict[str, Any]:
    """The whole document as plain data (serve it with msgspec.json.encode)."""
    types = [*_collect_types(endpoints), *extra_types]
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(map(id, types), refs, strict=True))
    for comp, props in _REFINEMENTS.items():
        for prop, extra in props.items():
            if comp in components:
                components[comp]["properties"][prop].update(extra)
    if "Resource" in components:
        components["Resource"]["allOf"] = _RESOURCE_RULES
    if "PkiSettings" in components:
        components["PkiSettings"]["allOf"] = _PKI_RULES
    if "IpWhitelisting" in components:
        components["IpWhitelisting"]["properties"]["allowed"]["items"] = {
            "type": "string",
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
        }
    error_ref = schema_of[id(ErrorBody)]
    links = _derived_links(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        path = _PATH_PARAM.sub(r"{\1}", ep.path)
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
        }
        if ep.description:
            op["description"] = ep.description
        params: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": dict(PATH_PARAMS.get(name, {"type": "string"})),
            }
            for name in _PATH_PARAM.findall(ep.path)
        ]
        for q in ep.query:
            schema = {"type": "array", "items": q.schema} if q.repeated else q.schema
            p: dict[str, Any] = {
                "name": q.name,
                "in": "query",
                "required": q.required,
                "schema": schema,
                "description": q.description,
            }
            if q.repeated:
                p.update(style="form", explode=True)
            params.append(p)
        if params:
            op["parameters"] = params
        content: dict[str, Any] = {}
        if ep.body is not None:
            content["application/json"] = {"schema": schema_of[id(ep.body)]}
        for media, schema in ep.body_media.items():
            content[media] = {"schema": schema}
        if content:
            op["requestBody"] = {"required": ep.body_required, "content": content}
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": _STATUS_TEXT.get(ep.status, "OK")}
        if ep.response_media:
            ok["content"] = {m: {"schema": s} for m, s in ep.response_media.items()}
        elif ep.response is not None:
            ok["content"] = {"application/json": {"schema": schema_of[id(ep.response)]}}
        if ep.response_headers:
            ok["headers"] = {k: {"schema": v} for k, v in ep.response_headers.items()}
        if links[ep.operation_id]:
            ok["links"] = {
                link.operation_id: {"operationId": link.operation_id, "parameters": link.parameters}
                for link in links[ep.operation_id]
            }
        responses[str(ep.status)] = ok
        for status, text in ep.extra_responses.items():
            responses[str(status)] = {"description": text, "content": ok.get("content", {})}
        errors = set(ep.errors) | ({401} if ep.auth else set())
        for status in sorted(errors):
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": error_ref}},
            }
        op["responses"] = responses
        if ep.auth:
            op["security"] = [{"bearer": []}]
        else:
            op["security"] = []
        paths.setdefault(path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "IoT gateway management API",
            "version": __version__,
            "description": "Connectors, resources, devices, state, content, events and live "
            'logs.  Every error is {"error": code, "message": text}.',
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "DIR/admin.token or a token from POST /api/v1/tokens",
                }
            },
        },
    }
