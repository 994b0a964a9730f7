"""``key=value`` arguments turned into typed JSON by the API's own contract.

Settings are given on the command line as text (``--set provisioning.presenter_identity=false``,
``--setting sync_interval_s=30``, ``--setting tag_fields=site,model``).  Instead of guessing
("does ``007`` look like a number?"), the CLI reads the type of each key from the schema the
gateway publishes at ``/api/v1/openapi.json`` (public, no token) and converts the text to
that type: ``string`` stays text, ``integer``/``number``/``boolean`` are parsed, an ``array``
is a JSON array or a comma-separated list, an ``object`` (or an untyped key) is JSON.  A key
the schema does not know is refused here, with the keys it does know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

__all__ = ["BadValue", "Contract", "merge", "parse_pairs"]

REF = "#/components/schemas/"


class BadValue(Exception):
    """A ``key=value`` argument that does not fit the schema; the message says why."""


def parse_pairs(items: Iterable[str], what: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` texts as pairs; a missing ``=`` is an error naming ``what``."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadValue(f"{what} {item!r} must look like KEY=VALUE")
        out.append((key.strip(), value))
    return out


def merge(base: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict."""
    *parents, leaf = dotted.split(".")
    node = base
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


class Contract:
    """The component schemas of one gateway's OpenAPI document."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.schemas: Mapping[str, Any] = document.get("components", {}).get("schemas", {})

    def _deref(self, schema: Any) -> dict[str, Any]:
        while isinstance(schema, Mapping) and "$ref" in schema:
            schema = self.schemas.get(str(schema["$ref"]).removeprefix(REF), {})
        return dict(schema) if isinstance(schema, Mapping) else {}

    def _options(self, schema: Any) -> list[dict[str, Any]]:
        """The alternatives of ``anyOf`` (null left out), or the schema itself."""
        s = self._deref(schema)
        if "anyOf" in s:
            return [self._deref(a) for a in s["anyOf"] if self._deref(a).get("type") != "null"]
        return [s]

    def _nullable(self, schema: Any) -> bool:
        s = self._deref(schema)
        return any(self._deref(a).get("type") == "null" for a in s.get("anyOf", []))

    def field(self, name: str, dotted: str) -> dict[str, Any]:
        """The schema of ``a.b.c`` inside component ``name``; unknown keys are refused."""
        schema: Any = self.schemas.get(name, {})
        walked: list[str] = []
        for part in dotted.split("."):
            props = self._deref(schema).get("properties")
            if props is None and walked:
                raise BadValue(f"{'.'.join(walked)} has no parts to set")
            if props is None or part not in props:
                known = ", ".join(sorted(props or {}))
                where = ".".join(walked) or name
                raise BadValue(f"{where} has no setting {part!r} (known: {known})")
            walked.append(part)
            schema = props[part]
        return dict(schema) if isinstance(schema, Mapping) else {}

    def convert(self, schema: Any, text: str, key: str) -> Any:
        """``text`` as the value ``schema`` describes."""
        if text == "null" and self._nullable(schema):
            return None
        options = self._options(schema)
        kinds = [o.get("type") for o in options]
        if len(options) == 1 and "enum" in options[0] and kinds[0] in (None, "string"):
            return text
        for kind, option in zip(kinds, options, strict=True):
            try:
                return self._as(kind, option, text, key)
            except BadValue:
                if len(options) == 1:
                    raise
        raise BadValue(f"{key}: {text!r} is not one of {', '.join(map(str, kinds))}")

    def _as(self, kind: Any, schema: dict[str, Any], text: str, key: str) -> Any:
        if kind == "string":
            return text
        if kind == "boolean":
            low = text.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise BadValue(f"{key} is a boolean: true or false, not {text!r}")
        if kind in ("integer", "number"):
            try:
                return int(text) if kind == "integer" else _number(text)
            except ValueError:
                raise BadValue(
                    f"{key} is {'an integer' if kind == 'integer' else 'a number'}, not {text!r}"
                ) from None
        if kind == "array":
            if text.lstrip().startswith("["):
                return _json(text, key)
            items = schema.get("items", {})
            return [
                self.convert(items, part.strip(), key) for part in text.split(",") if part.strip()
            ]
        if kind == "object":
            return _json(text, key)
        try:  # untyped: JSON when it is JSON, else the text
            return msgspec.json.decode(text)
        except msgspec.DecodeError:
            return text


def _number(text: str) -> float | int:
    value = float(text)
    return (
        int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    )


def _json(text: str, key: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise BadValue(f"{key} must be JSON here: {exc}") from None
