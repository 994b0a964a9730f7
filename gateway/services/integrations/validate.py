"""Validation of uploaded OpenAPI 2 documents, and the typed model built from them (sans-IO).

A document is refused whole: :func:`parse_document` collects every violation, each with the
JSON path of the offending node, and raises :class:`DocumentInvalid` listing them all, so an
operator fixes a document in one round trip.  The rules are Murano's service rules (the
Exosite cloud-to-cloud article and its service-definition reference):

* ``swagger: "2.0"``; ``info`` with ``title``, ``version`` and ``description``;
* ``schemes`` only ``https`` — plain ``http`` only with the explicit development flag
  ``allow_insecure_http`` (stored with the integration and shown by the API);
* ``produces`` only ``application/json``; ``consumes`` ``application/json`` and, for
  operations with ``in: formData`` parameters, ``application/x-www-form-urlencoded`` or
  ``multipart/form-data`` (document and operation level; ``type: file`` needs multipart,
  and ``in: body`` / ``in: formData`` never share an operation);
* array parameters with a scalar ``items`` type and a ``collectionFormat`` of ``csv``
  (the default), ``ssv``, ``tsv``, ``pipes`` or ``multi`` (``multi`` only ``in: query`` /
  ``in: formData``, as OpenAPI 2 says);
* ``basePath`` present; a ``description`` on every operation, parameter and schema property;
  ``type`` and ``description`` at every JSON-schema level (nested objects, array items);
* a unique ``operationId`` on every operation (operations are called by it);
* optional ``x-exosite-health-path`` (relative to ``basePath`` like every path; default
  ``basePath`` itself);
* ``securityDefinitions``: ``basic`` with ``x-exosite-user-field`` / ``x-exosite-secret-field``
  naming configuration parameters (the secret one must be ``format: password``);
  ``apiKey`` with ``x-exosite-secret-field``; ``oauth2`` with ``flow: application`` (the
  client-credentials grant), ``tokenUrl``, ``scopes``, ``x-exosite-client-id-field`` and
  ``x-exosite-secret-field`` (optional ``x-exosite-client-auth``: ``basic``, the default, or
  ``body``); requirements name only declared scopes; tokens may also be plain ``in: path`` /
  ``in: query`` parameters, which take their value from the configuration parameter of the
  same name (Murano: configuration values are the defaults of operation parameters);
* ``x-exosite-config-parameters``: a list of ``{name, description, type, format, required}``;
  ``format: password`` marks a secret (encrypted at rest, never returned or logged).

Nothing here performs I/O; YAML is parsed with ``yaml.safe_load`` (JSON is YAML).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import msgspec
import yaml

from gateway.errors import BadRequest
from gateway.services.integrations.schema import SCHEMA_TYPES, json_path, resolve_ref

__all__ = [
    "COLLECTION_FORMATS",
    "FORM",
    "JSON",
    "MULTIPART",
    "ConfigParam",
    "DocumentInvalid",
    "OperationSpec",
    "ParamSpec",
    "Requirement",
    "SecurityScheme",
    "SecurityUse",
    "Spec",
    "Violation",
    "check_document",
    "load_document",
    "parse_document",
]

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024  # an OpenAPI document larger than this is not a service
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
CONSUMES = (JSON, FORM, MULTIPART)
PARAM_LOCATIONS = ("path", "query", "header", "body", "formData")
SIMPLE_TYPES = ("string", "number", "integer", "boolean", "array")
# collectionFormat -> the separator joining an array's items (multi: one pair per item)
COLLECTION_FORMATS: dict[str, str | None] = {
    "csv": ",",
    "ssv": " ",
    "tsv": "\t",
    "pipes": "|",
    "multi": None,
}
OAUTH2_CLIENT_AUTH = ("basic", "body")
CONFIG_TYPES = ("string", "number", "integer", "boolean")
_TEMPLATE_RE = re.compile(r"{([^{}]+)}")
_TOO_DEEP = "the document is nested too deeply"
# Nodes a document may have once YAML aliases are expanded: the checker walks the expanded
# tree, so a few KiB of nested aliases (a "billion laughs") would otherwise take hours.
MAX_EXPANDED_NODES = 500_000


class Violation(msgspec.Struct, frozen=True):
    """One broken rule: where (a JSON path such as ``$.paths["/a"].get.description``) and why."""

    path: str
    message: str


class DocumentInvalid(BadRequest):
    """The document breaks at least one rule; ``violations`` lists every one of them."""

    code = "invalid_document"

    def __init__(self, violations: list[Violation]) -> None:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{first.path}: {first.message}{more}")
        self.violations = violations


class ConfigParam(msgspec.Struct, frozen=True):
    name: str
    description: str
    type: str = "string"
    format: str | None = None
    required: bool = False

    @property
    def secret(self) -> bool:
        return self.format == "password"


class ParamSpec(msgspec.Struct, frozen=True):
    """One operation parameter.  ``schema`` is the body schema (``in: body``) or, for the
    other locations, a schema built from ``type`` / ``items`` / ``enum``.
    ``collection_format`` says how an array travels (:data:`COLLECTION_FORMATS`)."""

    name: str
    location: str  # path | query | header | body | formData
    description: str
    required: bool
    schema: Any
    collection_format: str = "csv"


class SecurityScheme(msgspec.Struct, frozen=True):
    name: str
    type: str  # basic | apiKey | oauth2
    user_field: str | None = None  # basic: the user name; oauth2: the client id
    secret_field: str | None = None  # the password, key or client secret (format: password)
    key_name: str | None = None  # apiKey: header or query parameter name
    key_in: str | None = None  # apiKey: header | query
    token_url: str | None = None  # oauth2: absolute, or a path on the API's host
    scopes: tuple[str, ...] = ()  # oauth2: every scope the scheme declares
    client_auth: str = "basic"  # oauth2: client id and secret as HTTP basic or form fields


class SecurityUse(msgspec.Struct, frozen=True):
    """One scheme of a security requirement, with the scopes it asks for (oauth2 only)."""

    scheme: str
    scopes: tuple[str, ...] = ()


# A requirement object: every scheme in it applies together.  A ``security`` list holds
# alternatives (any one requirement suffices); an empty requirement means "no auth".
Requirement = tuple[SecurityUse, ...]


class OperationSpec(msgspec.Struct, frozen=True):
    operation_id: str
    method: str
    path: str
    description: str
    parameters: tuple[ParamSpec, ...]
    responses: dict[str, Any]  # status ("200", "default") -> schema or None
    security: tuple[Requirement, ...] | None  # None: the document-wide requirement applies
    consumes: tuple[str, ...] = (JSON,)  # the operation's media types, or the document's


class Spec(msgspec.Struct, frozen=True):
    """What the gateway needs from a valid document (the raw document stays stored too)."""

    title: str
    version: str
    description: str
    host: str | None
    base_path: str
    schemes: tuple[str, ...]
    health_path: str
    operations: dict[str, OperationSpec]
    config_params: dict[str, ConfigParam]
    security_schemes: dict[str, SecurityScheme]
    security: tuple[Requirement, ...]
    definitions: dict[str, Any]


def load_document(text: str | bytes) -> Any:
    """Parse YAML or JSON text; raise :class:`DocumentInvalid` (path ``$``) if unparsable.

    PyYAML's constructors raise more than ``YAMLError`` on hostile input: ``ValueError``
    for an impossible date (``2001-13-45``), ``RecursionError`` for nesting deeper than the
    stack; each is a document we refuse, not a failure of ours (found by fuzzing,
    ``fuzz/crashes/openapi``)."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DocumentInvalid([Violation("$", f"document larger than {MAX_DOCUMENT_BYTES} bytes")])
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DocumentInvalid([Violation("$", f"not valid YAML or JSON: {exc}")]) from None
    except RecursionError:
        raise DocumentInvalid([Violation("$", _TOO_DEEP)]) from None
    except (ValueError, OverflowError) as exc:
        raise DocumentInvalid([Violation("$", f"not valid YAML or JSON: {exc}")]) from None
    try:
        expanded = _expanded_nodes(doc, {})
    except RecursionError:
        raise DocumentInvalid([Violation("$", _TOO_DEEP)]) from None
    if expanded > MAX_EXPANDED_NODES:
        raise DocumentInvalid(
            [
                Violation(
                    "$",
                    f"the document expands to more than {MAX_EXPANDED_NODES} nodes "
                    "(YAML aliases that repeat or contain themselves)",
                )
            ]
        )
    if not isinstance(doc, dict):
        raise DocumentInvalid([Violation("$", "the document must be an object")])
    return doc


def _expanded_nodes(node: Any, seen: dict[int, int]) -> int:
    """How many nodes the checker would visit in ``node``: shared (aliased) containers count
    once per reference, in time linear in the distinct ones; a container that contains
    itself counts as too many."""
    if not isinstance(node, dict | list):
        return 1
    key = id(node)
    if key in seen:
        return seen[key]
    seen[key] = MAX_EXPANDED_NODES + 1  # still being counted: a cycle is over the limit
    items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
    total = 1
    for item in items:
        total += _expanded_nodes(item, seen)
        if total > MAX_EXPANDED_NODES:
            break
    seen[key] = total
    return total


class _Checker:
    """Walks one document, appending violations; keeps what the model needs."""

    def __init__(self, doc: Mapping[str, Any], *, allow_http: bool) -> None:
        self.doc = doc
        self.allow_http = allow_http
        self.out: list[Violation] = []
        defs = doc.get("definitions")
        self.definitions: dict[str, Any] = dict(defs) if isinstance(defs, Mapping) else {}
        params = doc.get("parameters")
        self.shared_params: Mapping[str, Any] = params if isinstance(params, Mapping) else {}
        self.consumes: tuple[str, ...] = (JSON,)  # the document's, once top() has read it

    def bad(self, path: str, message: str) -> None:
        self.out.append(Violation(path, message))

    def text(self, node: Mapping[str, Any], key: str, path: str) -> str:
        value = node.get(key)
        if not isinstance(value, str) or not value.strip():
            self.bad(json_path(path, key), "is required (a non-empty string)")
            return ""
        return value

    # -- top level ------------------------------------------------------------------------

    def top(self) -> None:
        doc = self.doc
        if str(doc.get("swagger")) != "2.0" or not isinstance(doc.get("swagger"), str):
            self.bad("$.swagger", 'must be "2.0" (a string: OpenAPI 2 / Swagger)')
        info = doc.get("info")
        if not isinstance(info, Mapping):
            self.bad("$.info", "is required (an object with title, version and description)")
        else:
            for key in ("title", "version", "description"):
                if key == "version" and isinstance(info.get(key), int | float):
                    continue  # a YAML number such as 1.0 is an acceptable version
                self.text(info, key, "$.info")
        self.schemes()
        self.consumes = self.media(doc, "consumes", "$", required=True) or (JSON,)
        self.media(doc, "produces", "$", required=True)
        base = doc.get("basePath")
        if not isinstance(base, str) or not base.startswith("/"):
            self.bad("$.basePath", "is required (a path starting with /)")
        host = doc.get("host")
        if host is not None and (not isinstance(host, str) or "/" in host or not host):
            self.bad("$.host", "must be a host name with an optional :port")
        health = doc.get("x-exosite-health-path")
        if health is not None and (not isinstance(health, str) or not health.startswith("/")):
            self.bad('$["x-exosite-health-path"]', "must be a path starting with /")

    def schemes(self) -> None:
        schemes = self.doc.get("schemes")
        if not isinstance(schemes, list) or not schemes:
            self.bad("$.schemes", "is required: a list containing https")
            return
        for i, s in enumerate(schemes):
            path = json_path("$.schemes", i)
            if s == "https":
                continue
            if s == "http":
                if not self.allow_http:
                    self.bad(
                        path,
                        "plain http is refused; only https is allowed (use the "
                        "allow_insecure_http development flag to accept http)",
                    )
            else:
                self.bad(path, f"unsupported scheme {s!r}; only https is allowed")

    def media(
        self, node: Mapping[str, Any], key: str, path: str, *, required: bool
    ) -> tuple[str, ...] | None:
        """The media types ``node[key]`` lists (None when absent).  ``produces`` admits only
        JSON; ``consumes`` also the two form encodings (for ``in: formData``)."""
        value = node.get(key)
        where = json_path(path, key)
        if value is None:
            if required:
                self.bad(where, f"is required: [{JSON}]")
            return None
        if not isinstance(value, list) or not value:
            self.bad(where, f"must be a list: [{JSON}]")
            return None
        allowed = CONSUMES if key == "consumes" else (JSON,)
        for i, m in enumerate(value):
            if m not in allowed:
                self.bad(
                    json_path(where, i),
                    f"unsupported media type {m!r}; only {' or '.join(allowed)}",
                )
        return tuple(str(m) for m in value if m in allowed)

    # -- configuration and security -------------------------------------------------------

    def config_params(self) -> dict[str, ConfigParam]:
        raw = self.doc.get("x-exosite-config-parameters")
        base = '$["x-exosite-config-parameters"]'
        out: dict[str, ConfigParam] = {}
        if raw is None:
            return out
        if not isinstance(raw, list):
            self.bad(base, "must be a list of {name, description, type, format, required}")
            return out
        for i, item in enumerate(raw):
            path = json_path(base, i)
            if not isinstance(item, Mapping):
                self.bad(path, "must be an object")
                continue
            name = self.text(item, "name", path)
            desc = self.text(item, "description", path)
            kind = item.get("type", "string")
            if kind not in CONFIG_TYPES:
                self.bad(json_path(path, "type"), f"must be one of {', '.join(CONFIG_TYPES)}")
            fmt = item.get("format")
            if fmt is not None and not isinstance(fmt, str):
                self.bad(json_path(path, "format"), "must be a string")
                fmt = None
            req = item.get("required", False)
            if not isinstance(req, bool):
                self.bad(json_path(path, "required"), "must be a boolean")
                req = False
            if name in out:
                self.bad(json_path(path, "name"), f"duplicate configuration parameter {name!r}")
            elif name:
                out[name] = ConfigParam(name, desc, str(kind), fmt, req)
        return out

    def security_schemes(self, config: Mapping[str, ConfigParam]) -> dict[str, SecurityScheme]:
        raw = self.doc.get("securityDefinitions")
        out: dict[str, SecurityScheme] = {}
        if raw is None:
            return out
        if not isinstance(raw, Mapping):
            self.bad("$.securityDefinitions", "must be an object")
            return out
        for name, item in raw.items():
            path = json_path("$.securityDefinitions", str(name))
            if not isinstance(item, Mapping):
                self.bad(path, "must be an object")
                continue
            self.text(item, "description", path)
            kind = item.get("type")
            if kind == "basic":
                user = self.config_ref(item, "x-exosite-user-field", path, config, secret=False)
                secret = self.config_ref(item, "x-exosite-secret-field", path, config, secret=True)
                out[str(name)] = SecurityScheme(str(name), "basic", user, secret)
            elif kind == "apiKey":
                secret = self.config_ref(item, "x-exosite-secret-field", path, config, secret=True)
                key_in = item.get("in")
                if key_in not in ("header", "query"):
                    self.bad(json_path(path, "in"), "must be header or query")
                key_name = self.text(item, "name", path)
                out[str(name)] = SecurityScheme(
                    str(name), "apiKey", None, secret, key_name, str(key_in)
                )
            elif kind == "oauth2":
                out[str(name)] = self.oauth2(str(name), item, path, config)
            else:
                self.bad(
                    json_path(path, "type"),
                    f"unsupported security type {kind!r}: use basic, apiKey, oauth2, or token "
                    "parameters in: path / in: query",
                )
        return out

    def oauth2(
        self, name: str, item: Mapping[str, Any], path: str, config: Mapping[str, ConfigParam]
    ) -> SecurityScheme:
        """An OAuth2 scheme: only the client-credentials grant (``flow: application``), the
        one a server-to-server integration can run without a person (docs/decisions.md,
        "Cloud-to-cloud integrations")."""
        flow = item.get("flow")
        if flow != "application":
            self.bad(
                json_path(path, "flow"),
                ("is required" if flow is None else f"{flow!r} is not supported")
                + ": only application (the OAuth2 client-credentials grant) runs without a "
                "person",
            )
        url = item.get("tokenUrl")
        if not isinstance(url, str) or not url:
            self.bad(json_path(path, "tokenUrl"), "is required for flow: application")
            url = None
        elif not url.startswith("/"):
            parts = urllib.parse.urlsplit(url)
            allowed = ("https", "http") if self.allow_http else ("https",)
            if parts.scheme not in allowed or not parts.netloc:
                self.bad(
                    json_path(path, "tokenUrl"),
                    "must be an https URL or a path on the API's host (plain http only with "
                    "the allow_insecure_http development flag)",
                )
        raw_scopes = item.get("scopes")
        scopes: list[str] = []
        if not isinstance(raw_scopes, Mapping):
            self.bad(json_path(path, "scopes"), "is required: an object of scope -> description")
        else:
            for scope, desc in raw_scopes.items():
                if not isinstance(scope, str) or not scope or " " in scope:
                    self.bad(json_path(path, "scopes"), f"{scope!r} is not a scope name")
                elif not isinstance(desc, str):
                    self.bad(json_path(json_path(path, "scopes"), scope), "must be a description")
                else:
                    scopes.append(scope)
        client = self.config_ref(item, "x-exosite-client-id-field", path, config, secret=False)
        secret = self.config_ref(item, "x-exosite-secret-field", path, config, secret=True)
        auth = item.get("x-exosite-client-auth", "basic")
        if auth not in OAUTH2_CLIENT_AUTH:
            self.bad(
                json_path(path, "x-exosite-client-auth"),
                "must be basic (HTTP basic, the default) or body (form fields)",
            )
            auth = "basic"
        return SecurityScheme(
            name,
            "oauth2",
            client,
            secret,
            token_url=url,
            scopes=tuple(scopes),
            client_auth=str(auth),
        )

    def config_ref(
        self,
        item: Mapping[str, Any],
        key: str,
        path: str,
        config: Mapping[str, ConfigParam],
        *,
        secret: bool,
    ) -> str | None:
        value = item.get(key)
        where = json_path(path, key)
        if not isinstance(value, str) or not value:
            self.bad(where, "is required: the name of a configuration parameter")
            return None
        param = config.get(value)
        if param is None:
            self.bad(where, f"names {value!r}, which is not in x-exosite-config-parameters")
        elif secret and not param.secret:
            self.bad(where, f"names {value!r}, which must have format: password (a secret)")
        return value

    def requirement(
        self, raw: Any, path: str, schemes: Mapping[str, SecurityScheme]
    ) -> tuple[Requirement, ...]:
        """A ``security`` list: alternatives, each a set of schemes used together.  Scopes
        must be declared by their oauth2 scheme; other schemes take an empty list."""
        if not isinstance(raw, list):
            self.bad(path, "must be a list of security requirement objects")
            return ()
        out: list[Requirement] = []
        for i, req in enumerate(raw):
            if not isinstance(req, Mapping):
                self.bad(json_path(path, i), "must be an object")
                continue
            uses: list[SecurityUse] = []
            for name, scopes in req.items():
                where = json_path(json_path(path, i), str(name))
                scheme = schemes.get(str(name))
                if scheme is None:
                    self.bad(where, "is not defined in securityDefinitions")
                    continue
                if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                    self.bad(where, "must be a list of scope names")
                    continue
                if scheme.type != "oauth2" and scopes:
                    self.bad(where, f"must be an empty list for type {scheme.type}")
                    continue
                undeclared = [s for s in scopes if s not in scheme.scopes]
                if undeclared:
                    self.bad(
                        where,
                        f"scope(s) {', '.join(map(repr, undeclared))} are not declared in "
                        f"securityDefinitions.{name}.scopes",
                    )
                uses.append(SecurityUse(str(name), tuple(sorted(set(scopes)))))
            if sum(1 for u in uses if schemes[u.scheme].type == "oauth2") > 1:
                # both would need the one Authorization header
                self.bad(json_path(path, i), "at most one oauth2 scheme per requirement")
            out.append(tuple(uses))
        return tuple(out)

    # -- schemas --------------------------------------------------------------------------

    def schema(self, node: Any, path: str, *, depth: int = 0) -> None:
        """``type`` and ``description`` at every level; properties and items recursively."""
        if depth > 64:
            self.bad(path, "schema nested too deeply")
            return
        if not isinstance(node, Mapping):
            self.bad(path, "must be a JSON schema object")
            return
        if "$ref" in node:
            if resolve_ref(str(node["$ref"]), self.definitions) is None:
                self.bad(
                    json_path(path, "$ref"),
                    f"{node['$ref']!r} does not resolve to #/definitions/<name>",
                )
            return  # the definition itself is checked under $.definitions
        kind = node.get("type")
        if kind is None:
            self.bad(json_path(path, "type"), "is required at every schema level")
        elif kind not in SCHEMA_TYPES:
            self.bad(json_path(path, "type"), f"unknown type {kind!r}")
        self.text(node, "description", path)
        props = node.get("properties")
        if props is not None:
            if not isinstance(props, Mapping):
                self.bad(json_path(path, "properties"), "must be an object")
            else:
                for key, sub in props.items():
                    self.schema(
                        sub, json_path(json_path(path, "properties"), str(key)), depth=depth + 1
                    )
        if kind == "array":
            if "items" not in node:
                self.bad(json_path(path, "items"), "is required for type array")
            else:
                self.schema(node["items"], json_path(path, "items"), depth=depth + 1)
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            self.schema(extra, json_path(path, "additionalProperties"), depth=depth + 1)

    # -- paths and operations -------------------------------------------------------------

    def parameter(self, raw: Any, path: str) -> ParamSpec | None:
        if isinstance(raw, Mapping) and "$ref" in raw:
            ref = str(raw["$ref"])
            target = (
                self.shared_params.get(ref[len("#/parameters/") :])
                if ref.startswith("#/parameters/")
                else None
            )
            if target is None:
                self.bad(
                    json_path(path, "$ref"), f"{ref!r} does not resolve to #/parameters/<name>"
                )
                return None
            raw = target
        if not isinstance(raw, Mapping):
            self.bad(path, "must be a parameter object")
            return None
        name = self.text(raw, "name", path)
        desc = self.text(raw, "description", path)
        loc = raw.get("in")
        required = raw.get("required", False) is True
        if loc not in PARAM_LOCATIONS:
            self.bad(json_path(path, "in"), f"must be one of {', '.join(PARAM_LOCATIONS)}")
            return None
        if loc == "body":
            if "schema" not in raw:
                self.bad(json_path(path, "schema"), "is required for in: body")
                return None
            self.schema(raw["schema"], json_path(path, "schema"))
            schema = raw["schema"]
        else:
            kind = raw.get("type")
            kinds = (*SIMPLE_TYPES, "file") if loc == "formData" else SIMPLE_TYPES
            if kind not in kinds:
                hint = " (type file only for in: formData)" if kind == "file" else ""
                self.bad(json_path(path, "type"), f"must be one of {', '.join(kinds)}{hint}")
            schema = {k: raw[k] for k in ("type", "items", "enum", "format") if k in raw}
            if kind == "array":
                items = raw.get("items")
                if not isinstance(items, Mapping) or items.get("type") not in SIMPLE_TYPES[:4]:
                    self.bad(
                        json_path(path, "items"), "is required for type array, with a scalar type"
                    )
            if loc == "path" and not required:
                self.bad(json_path(path, "required"), "must be true for in: path")
                required = True
            return ParamSpec(
                name, str(loc), desc, required, schema, self.collection_format(raw, path)
            )
        return ParamSpec(name, str(loc), desc, required, schema)

    def collection_format(self, raw: Mapping[str, Any], path: str) -> str:
        """How an array parameter travels; ``csv`` unless the document says otherwise."""
        fmt = raw.get("collectionFormat")
        where = json_path(path, "collectionFormat")
        if fmt is None:
            return "csv"
        if raw.get("type") != "array":
            self.bad(where, "is only for type array")
        elif fmt not in COLLECTION_FORMATS:
            self.bad(where, f"must be one of {', '.join(COLLECTION_FORMATS)}")
        elif fmt == "multi" and raw.get("in") not in ("query", "formData"):
            self.bad(where, "multi is only valid for in: query or in: formData")
        else:
            return str(fmt)
        return "csv"

    def operation(
        self,
        route: str,
        method: str,
        op: Any,
        shared: list[ParamSpec],
        schemes: Mapping[str, SecurityScheme],
        seen: dict[str, str],
    ) -> OperationSpec | None:
        path = json_path(json_path("$.paths", route), method)
        if not isinstance(op, Mapping):
            self.bad(path, "must be an operation object")
            return None
        desc = self.text(op, "description", path)
        op_id = op.get("operationId")
        if not isinstance(op_id, str) or not op_id:
            self.bad(
                json_path(path, "operationId"),
                "is required (operations are called by their operationId)",
            )
        elif op_id in seen:
            self.bad(
                json_path(path, "operationId"),
                f"duplicate operationId {op_id!r} (also at {seen[op_id]})",
            )
        else:
            seen[op_id] = path
        consumes = self.media(op, "consumes", path, required=False) or self.consumes
        self.media(op, "produces", path, required=False)
        params = {(p.name, p.location): p for p in shared}
        raw_params = op.get("parameters", [])
        if not isinstance(raw_params, list):
            self.bad(json_path(path, "parameters"), "must be a list")
            raw_params = []
        for i, raw in enumerate(raw_params):
            p = self.parameter(raw, json_path(json_path(path, "parameters"), i))
            if p is not None:
                params[(p.name, p.location)] = p
        self.encodings(path, list(params.values()), consumes)
        declared = {p.name for p in params.values() if p.location == "path"}
        for var in _TEMPLATE_RE.findall(route):
            if var not in declared:
                self.bad(
                    json_path(path, "parameters"),
                    f"path template variable {{{var}}} has no in: path parameter",
                )
        for p in params.values():
            if p.location == "path" and "{" + p.name + "}" not in route:
                self.bad(
                    json_path(path, "parameters"),
                    f"in: path parameter {p.name!r} does not appear in {route!r}",
                )
        responses: dict[str, Any] = {}
        raw_resp = op.get("responses")
        if not isinstance(raw_resp, Mapping) or not raw_resp:
            self.bad(json_path(path, "responses"), "is required (at least one response)")
        else:
            for status, resp in raw_resp.items():
                rpath = json_path(json_path(path, "responses"), str(status))
                if not isinstance(resp, Mapping):
                    self.bad(rpath, "must be a response object")
                    continue
                self.text(resp, "description", rpath)
                if "schema" in resp:
                    self.schema(resp["schema"], json_path(rpath, "schema"))
                responses[str(status)] = resp.get("schema")
        security = None
        if "security" in op:
            security = self.requirement(op["security"], json_path(path, "security"), schemes)
        if not isinstance(op_id, str) or not op_id:
            return None
        return OperationSpec(
            op_id,
            method.upper(),
            route,
            desc,
            tuple(params.values()),
            responses,
            security,
            consumes,
        )

    def encodings(self, path: str, params: list[ParamSpec], consumes: tuple[str, ...]) -> None:
        """How the request body travels: one JSON ``in: body`` parameter, or form fields
        (``in: formData``) under a form media type the operation consumes — never both."""
        where = json_path(path, "parameters")
        body = [p for p in params if p.location == "body"]
        form = [p for p in params if p.location == "formData"]
        if len(body) > 1:
            self.bad(where, "at most one in: body parameter")
        if body and form:
            self.bad(where, "in: body and in: formData parameters cannot share an operation")
        elif body and JSON not in consumes:
            self.bad(json_path(path, "consumes"), f"an in: body parameter needs {JSON}")
        if form and FORM not in consumes and MULTIPART not in consumes:
            self.bad(
                json_path(path, "consumes"),
                f"in: formData parameters need {FORM} or {MULTIPART}",
            )
        if any(p.schema.get("type") == "file" for p in form) and MULTIPART not in consumes:
            self.bad(json_path(path, "consumes"), f"a type: file parameter needs {MULTIPART}")

    def paths(self, schemes: Mapping[str, SecurityScheme]) -> dict[str, OperationSpec]:
        raw = self.doc.get("paths")
        ops: dict[str, OperationSpec] = {}
        if not isinstance(raw, Mapping) or not raw:
            self.bad("$.paths", "is required (an object of paths with operations)")
            return ops
        seen: dict[str, str] = {}
        for route, item in raw.items():
            rpath = json_path("$.paths", str(route))
            if not isinstance(route, str) or not route.startswith("/"):
                self.bad(rpath, "path keys must start with /")
                continue
            if not isinstance(item, Mapping):
                self.bad(rpath, "must be a path item object")
                continue
            shared: list[ParamSpec] = []
            raw_shared = item.get("parameters", [])
            if isinstance(raw_shared, list):
                for i, p in enumerate(raw_shared):
                    spec = self.parameter(p, json_path(json_path(rpath, "parameters"), i))
                    if spec is not None:
                        shared.append(spec)
            else:
                self.bad(json_path(rpath, "parameters"), "must be a list")
            methods = [m for m in METHODS if m in item]
            if not methods:
                self.bad(rpath, "has no operation (get, put, post, delete, options, head, patch)")
            for method in methods:
                op = self.operation(route, method, item[method], shared, schemes, seen)
                if op is not None:
                    ops[op.operation_id] = op
        return ops

    def run(self) -> Spec:
        self.top()
        for name, sub in self.definitions.items():
            self.schema(sub, json_path("$.definitions", str(name)))
        config = self.config_params()
        schemes = self.security_schemes(config)
        security: tuple[Requirement, ...] = ()
        if "security" in self.doc:
            security = self.requirement(self.doc["security"], "$.security", schemes)
        ops = self.paths(schemes)
        info = self.doc.get("info") if isinstance(self.doc.get("info"), Mapping) else {}
        assert isinstance(info, Mapping)
        base = self.doc.get("basePath")
        base_path = base.rstrip("/") if isinstance(base, str) else ""
        health = self.doc.get("x-exosite-health-path")
        health_path = base_path + health if isinstance(health, str) else (base_path or "/")
        schemes_list = self.doc.get("schemes")
        host = self.doc.get("host")
        return Spec(
            title=str(info.get("title", "")),
            version=str(info.get("version", "")),
            description=str(info.get("description", "")),
            host=host if isinstance(host, str) else None,
            base_path=base_path,
            schemes=tuple(str(s) for s in schemes_list) if isinstance(schemes_list, list) else (),
            health_path=health_path,
            operations=ops,
            config_params=config,
            security_schemes=schemes,
            security=security,
            definitions=self.definitions,
        )


def _check(doc: Mapping[str, Any], allow_http: bool) -> tuple[Spec | None, list[Violation]]:
    """Run the checker; a document nested past the stack is one violation at ``$``."""
    checker = _Checker(doc, allow_http=allow_http)
    try:
        spec = checker.run()
    except RecursionError:
        return None, [Violation("$", _TOO_DEEP)]
    return spec, checker.out


def check_document(doc: Mapping[str, Any], *, allow_http: bool = False) -> list[Violation]:
    """Every violation in ``doc`` (empty when it is acceptable)."""
    return _check(doc, allow_http)[1]


def parse_document(text: str | bytes, *, allow_http: bool = False) -> Spec:
    """Parse and validate; return the model or raise :class:`DocumentInvalid` with every
    violation.  ``allow_http`` is the visible development flag admitting ``http``."""
    doc = load_document(text)
    spec, violations = _check(doc, allow_http)
    if violations:
        raise DocumentInvalid(violations)
    assert spec is not None
    return spec
