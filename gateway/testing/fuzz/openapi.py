"""Fuzz target: the OpenAPI 2 validator of cloud-to-cloud integrations.

Input: a document, as the management API receives it (YAML or JSON bytes).

Invariants:

* :func:`parse_document` returns a :class:`Spec` or raises :class:`DocumentInvalid` whose
  ``violations`` list is not empty and whose every entry has a JSON path starting with
  ``$`` and a message; no other exception, whatever the bytes (deep nesting, YAML tags,
  dates, anchors included);
* :func:`check_document` on the loaded document agrees: no violations for a valid one;
* a valid document's operations are keyed by their own ``operationId``.
"""

from __future__ import annotations

from pathlib import Path

from gateway.services.integrations.validate import (
    DocumentInvalid,
    Spec,
    check_document,
    load_document,
    parse_document,
)

__all__ = ["NAME", "check", "seeds"]

NAME = "openapi"
_DATA = Path(__file__).resolve().parents[3] / "tests" / "data"


def check(data: bytes) -> None:
    allow_http = bool(data[:1]) and data[0] & 1 == 1
    violations = None
    try:
        spec = parse_document(data, allow_http=allow_http)
    except DocumentInvalid as exc:
        violations = exc.violations
    if violations is not None:
        assert violations, "DocumentInvalid without violations"
        for v in violations:
            assert v.path.startswith("$"), v
            assert v.message, v
        return
    assert isinstance(spec, Spec)
    assert check_document(load_document(data), allow_http=allow_http) == []
    for op_id, op in spec.operations.items():
        assert op.operation_id == op_id, (op_id, op.operation_id)


def seeds() -> list[bytes]:
    found = sorted(_DATA.glob("pump-fleet-*.yaml")) + sorted((_DATA / "broken").glob("*.yaml"))[:6]
    docs = [p.read_bytes() for p in found]
    return [
        *docs,
        b'{"swagger": "2.0", "info": {"title": "t", "version": "1", "description": "d"}}',
        b"a: 2001-12-14\nb: !!binary AAA=\nc: &x [1]\nd: *x\n",
    ]
