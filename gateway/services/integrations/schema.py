"""A small JSON-schema checker for the subset OpenAPI 2 documents use (sans-IO).

Integrations validate operation parameters before a request leaves and responses after it
comes back, against the schemas the uploaded document declares.  The subset is what
Swagger 2 allows: ``type``, ``properties``, ``required``, ``items``, ``enum``,
``additionalProperties`` (boolean or schema) and local ``$ref`` to ``#/definitions/…``.
Errors are returned as ``(json_path, message)`` pairs so callers can list them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SCHEMA_TYPES", "check_value", "json_path", "resolve_ref"]

SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null", "file")
MAX_REF_DEPTH = 32  # a cycle of $ref through definitions stops here instead of recursing


def json_path(base: str, key: str | int) -> str:
    """Append ``key`` to a JSON path: ``$.info.title``, ``$.paths["/a/{id}"]``, ``$.x[0]``."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    if key.isidentifier():
        return f"{base}.{key}"
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{base}["{escaped}"]'


def resolve_ref(ref: str, definitions: Mapping[str, Any]) -> Any:
    """The schema ``#/definitions/<name>`` names, or None when it does not exist."""
    prefix = "#/definitions/"
    if not ref.startswith(prefix):
        return None
    return definitions.get(ref[len(prefix) :])


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    return True  # "file" and unknown kinds are not checked


def check_value(
    schema: Any,
    value: Any,
    definitions: Mapping[str, Any],
    path: str = "$",
    *,
    _depth: int = 0,
) -> list[tuple[str, str]]:
    """Every way ``value`` breaks ``schema``, as (path, message); empty when it fits.

    ``x-nullable: true`` on a schema admits ``null`` (the Swagger 2 convention).  A schema
    that is not a mapping admits anything: the document validator has already refused
    documents without types, so this only happens for deliberately open schemas.
    """
    if not isinstance(schema, Mapping) or _depth > MAX_REF_DEPTH:
        return []
    if "$ref" in schema:
        target = resolve_ref(str(schema["$ref"]), definitions)
        if target is None:
            return [(path, f"unresolvable $ref {schema['$ref']!r}")]
        return check_value(target, value, definitions, path, _depth=_depth + 1)
    if value is None and schema.get("x-nullable") is True:
        return []
    errors: list[tuple[str, str]] = []
    kind = schema.get("type")
    if isinstance(kind, str) and not _type_ok(kind, value):
        return [(path, f"expected {kind}, got {_kind_of(value)}")]
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        errors.append((path, f"must be one of {enum!r}"))
    if isinstance(value, dict):
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = schema.get("required")
        if isinstance(required, list):
            errors.extend(
                (json_path(path, name), "is required")
                for name in required
                if isinstance(name, str) and name not in value
            )
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = json_path(path, str(key))
            if key in props:
                errors.extend(check_value(props[key], item, definitions, sub, _depth=_depth + 1))
            elif extra is False:
                errors.append((sub, "is not an allowed property"))
            elif isinstance(extra, Mapping):
                errors.extend(check_value(extra, item, definitions, sub, _depth=_depth + 1))
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                errors.extend(
                    check_value(items, item, definitions, json_path(path, i), _depth=_depth + 1)
                )
    return errors


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
