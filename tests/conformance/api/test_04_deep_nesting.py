"""Input nested deeper than any parser's recursion limit (100,000 levels of JSON or YAML)
is a 400 in the error shape on every management route that parses it — never a 500 with a
RecursionError — and changes nothing."""

from __future__ import annotations

import base64

import httpx
import pytest

from .test_01_contract import assert_error

DEPTH = 100_000
DEEP = "[" * DEPTH + "]" * DEPTH


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/connectors", DEEP),
        ("POST", "/api/v1/connectors", '{"name": "x", "description": ' + DEEP + "}"),
        ("PATCH", "/api/v1/connectors/demo/devices/dev-1/state", '{"data_out": ' + DEEP + "}"),
        ("POST", "/api/v1/connectors/demo/resources", DEEP),
        ("POST", "/api/v1/tokens", DEEP),
    ],
)
def test_deep_json_body_is_400(api: httpx.Client, method: str, path: str, body: str) -> None:
    before = api.get("/api/v1/connectors").json()
    r = api.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")
    assert api.get("/api/v1/connectors").json() == before


def test_deep_yaml_document_is_refused(api: httpx.Client) -> None:
    """The validator reports a document nested past the stack as one violation at ``$``
    (gateway/services/integrations/validate.py), like any other broken document: the
    validate route answers it, adding an integration with it is a 400."""
    r = api.post(
        "/api/v1/connectors/demo/integrations/validate",
        json={"document": DEEP},
    )
    assert r.status_code == 200, r.text
    assert r.json()["valid"] is False
    assert r.json()["violations"] == [{"path": "$", "message": "the document is nested too deeply"}]
    r = api.post("/api/v1/connectors/demo/integrations", json={"name": "deep", "document": DEEP})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_document"


def test_deep_cursor_is_400(api: httpx.Client) -> None:
    nested = "[" * 1500 + "]" * 1500  # the cursor parameter allows 4096 characters
    cursor = base64.urlsafe_b64encode(nested.encode()).decode().rstrip("=")
    r = api.get("/api/v1/connectors/demo/devices", params={"cursor": cursor})
    assert_error(r, 400, "bad_request")
    assert api.get("/api/v1/health").status_code == 200
