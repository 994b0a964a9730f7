"""Sans-IO parts of integrations: identities from asset ids, request building, secrets
at rest, Retry-After, response/parameter schema checks."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Literal

import pytest

from gateway.errors import InvalidValue
from gateway.services.connectors import IdentityFormat, IdentityFormatOptions
from gateway.services.integrations.jobs import identity_for, map_fields, render_template
from gateway.services.integrations.operations import (
    NotConfigured,
    ParameterInvalid,
    parse_retry_after,
    prepare,
    redact,
)
from gateway.services.integrations.schema import check_value
from gateway.services.integrations.validate import parse_document
from gateway.services.secretbox import SecretBox

DATA = Path(__file__).parents[1] / "data"
BASIC = parse_document((DATA / "pump-fleet-basic.yaml").read_text())
TOKEN = parse_document((DATA / "pump-fleet-token.yaml").read_text())


@pytest.mark.parametrize(
    ("kind", "casing", "length", "prefix"),
    [
        ("opaque", "mixed", 0, ""),
        ("opaque", "upper", 24, "P-"),
        ("base16", "lower", 0, ""),
        ("base10", "mixed", 12, ""),
        ("mac:48", "upper", 0, ""),
        ("mac:48-nosep", "lower", 0, ""),
        ("uuid:v4", "lower", 0, ""),
    ],
)
def test_identity_fits_the_connector_format(
    kind: str, casing: Literal["mixed", "upper", "lower"], length: int, prefix: str
) -> None:
    fmt = IdentityFormat(
        type=kind, prefix=prefix, options=IdentityFormatOptions(casing=casing, length=length)
    )
    ident = identity_for("pump-001", fmt)
    fmt.check(ident)  # raises if not valid
    assert ident == identity_for("pump-001", fmt)  # stable
    assert ident != identity_for("pump-002", fmt)


def test_opaque_identity_is_the_sha256_hex_of_the_asset_id() -> None:
    assert identity_for("pump-001", IdentityFormat()) == hashlib.sha256(b"pump-001").hexdigest()


def test_identity_impossible_for_the_format_is_refused() -> None:
    with pytest.raises(InvalidValue):
        identity_for("x", IdentityFormat(prefix="bad/prefix"))


def test_prepare_basic_auth_and_path_encoding() -> None:
    op = BASIC.operations["assetState"]
    req = prepare(BASIC, op, {"id": "a b/c"}, {"username": "u", "password": "p"}, base="https://h")
    assert req.url == "https://h/api/v1.0/assets/a%20b%2Fc/state"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert req.secrets == ("p",)
    with pytest.raises(NotConfigured, match="'password' is not set"):
        prepare(BASIC, op, {"id": "1"}, {"username": "u"}, base="https://h")


def test_prepare_token_from_configuration_and_type_checks() -> None:
    op = TOKEN.operations["assetState"]
    req = prepare(TOKEN, op, {"id": "7"}, {"token": "T0K"}, base="https://h")
    assert req.query == [("token", "T0K")]
    with pytest.raises(ParameterInvalid, match="expected string, got integer"):
        prepare(TOKEN, op, {"id": 7}, {"token": "T0K"}, base="https://h")
    with pytest.raises(ParameterInvalid, match="'token' \\(query\\) is required"):
        prepare(TOKEN, op, {"id": "7"}, {}, base="https://h")


def test_secret_box_round_trip_is_bound_to_its_context(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path)
    sealed = box.encrypt("hunter2-secret", context="demo/pumps/password")
    assert "hunter2" not in sealed
    assert box.decrypt(sealed, context="demo/pumps/password") == "hunter2-secret"
    with pytest.raises(ValueError):
        box.decrypt(sealed, context="demo/other/password")
    again = SecretBox.from_data_dir(tmp_path)  # the key file persists
    assert again.decrypt(sealed, context="demo/pumps/password") == "hunter2-secret"
    assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert "key" not in repr(box).replace("<key hidden>", "")


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_response_schema_checks_nested_levels() -> None:
    schema = {"$ref": "#/definitions/AssetState"}
    ok = {"temperature": 1.5, "battery": 90, "vibration": 0.1, "readings": [1, 2.5]}
    assert check_value(schema, ok, BASIC.definitions) == []
    bad = {"temperature": "hot", "battery": 90, "readings": [1, "x"]}
    assert check_value(schema, bad, BASIC.definitions) == [
        ("$.vibration", "is required"),
        ("$.temperature", "expected number, got string"),
        ("$.readings[1]", "expected number, got string"),
    ]


def test_field_mapping_and_templates() -> None:
    state = {"t": {"value": 3}, "b": 5, "skip": [1]}
    assert map_fields(state, {"temperature": "t.value", "battery": "b", "x": "nope"}) == {
        "temperature": 3,
        "battery": 5,
    }
    assert map_fields(state, {}) == {"b": 5}
    assert render_template({"n": ["$name at ${site}"], "k": 1}, {"name": "P", "site": "N"}) == {
        "n": ["P at N"],
        "k": 1,
    }
    assert redact("token=abc&x=abc", ["abc"]) == "token=***&x=***"
