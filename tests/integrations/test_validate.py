"""OpenAPI 2 document validation: one broken document per rule, each
refused with the right JSON path and message; the valid pump-fleet documents accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.services.integrations.validate import (
    DocumentInvalid,
    check_document,
    load_document,
    parse_document,
)

DATA = Path(__file__).parents[1] / "data"
EXPECTED: dict[str, list[str]] = json.loads((DATA / "broken" / "expected.json").read_text())


@pytest.mark.parametrize("variant", ["basic", "token"])
def test_valid_pump_fleet_documents_are_accepted(variant: str) -> None:
    spec = parse_document((DATA / f"pump-fleet-{variant}.yaml").read_text())
    assert sorted(spec.operations) == ["assetData", "assetState", "assets", "health"]
    assert spec.base_path == "/api/v1.0"
    assert spec.health_path == "/api/v1.0/health"
    state = spec.operations["assetState"]
    assert (state.method, state.path) == ("GET", "/assets/{id}/state")
    secrets = [p.name for p in spec.config_params.values() if p.secret]
    assert secrets == (["password"] if variant == "basic" else ["token"])


def test_json_documents_are_accepted_too() -> None:
    doc = load_document((DATA / "pump-fleet-basic.yaml").read_text())
    assert parse_document(json.dumps(doc)).title == "Pump Fleet Cloud"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_document_is_refused_with_path_and_message(name: str) -> None:
    path, message = EXPECTED[name]
    with pytest.raises(DocumentInvalid) as info:
        parse_document((DATA / "broken" / f"{name}.yaml").read_text())
    found = [(v.path, v.message) for v in info.value.violations]
    assert any(p == path and message in m for p, m in found), found


def test_every_violation_is_listed_at_once() -> None:
    doc = load_document((DATA / "pump-fleet-basic.yaml").read_text())
    doc["swagger"] = "1.2"
    del doc["basePath"]
    doc["paths"]["/assets"]["get"].pop("description")
    del doc["definitions"]["Asset"]["properties"]["name"]["description"]
    paths = {v.path for v in check_document(doc)}
    assert {
        "$.swagger",
        "$.basePath",
        '$.paths["/assets"].get.description',
        "$.definitions.Asset.properties.name.description",
    } <= paths


def test_plain_http_needs_the_visible_development_flag() -> None:
    text = (DATA / "pump-fleet-basic.yaml").read_text().replace("  - https", "  - http")
    with pytest.raises(DocumentInvalid, match="plain http is refused"):
        parse_document(text)
    assert parse_document(text, allow_http=True).schemes == ("http",)


def test_the_first_violation_is_the_message() -> None:
    with pytest.raises(DocumentInvalid) as info:
        parse_document((DATA / "broken" / "swagger-version.yaml").read_text())
    assert info.value.code == "invalid_document"
    assert info.value.message.startswith("$.swagger: ")
    assert info.value.http_status == 400
