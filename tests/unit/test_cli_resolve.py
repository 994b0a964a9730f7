"""How the CLI finds its gateway and converts ``key=value`` text (gateway/cli/context.py,
gateway/cli/schema.py, gateway/cli/integration.py): pure functions, no gateway needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.context import Settings, normalize_api, resolve
from gateway.cli.integration import _convert
from gateway.cli.schema import BadValue, Contract


def given(**kw: Any) -> Settings:
    s = Settings()
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def write_run_json(data: Path, *, port: int, host: str | None = None, pid: int = 1) -> None:
    data.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"pid": pid, "ports": {"api": port, "tls": 1}}
    if host is not None:
        info["api_host"] = host
    (data / "run.json").write_text(json.dumps(info))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("http://127.0.0.1:9080", "http://127.0.0.1:9080"),
        ("http://127.0.0.1:9080/", "http://127.0.0.1:9080"),
        ("http://127.0.0.1:9080/api/v1", "http://127.0.0.1:9080"),  # one meaning for both forms
        ("http://127.0.0.1:9080/api/v1/", "http://127.0.0.1:9080"),
        ("127.0.0.1:9080", "http://127.0.0.1:9080"),
        ("https://gw.example:443", "https://gw.example:443"),
    ],
)
def test_api_address_has_one_meaning(text: str, want: str) -> None:
    assert normalize_api(text) == want


def test_address_precedence(tmp_path: Path) -> None:
    data = tmp_path / "var"
    write_run_json(data, port=4242)
    env = {"GATEWAY_DATA": str(data)}
    # run.json of the data directory
    t = resolve(given(), env)
    assert (t.api, t.api_from, t.pid) == ("http://127.0.0.1:4242", str(data / "run.json"), 1)
    # GATEWAY_API beats run.json, --api beats both
    t = resolve(given(), {**env, "GATEWAY_API": "http://10.0.0.1:1/api/v1"})
    assert (t.api, t.api_from) == ("http://10.0.0.1:1", "GATEWAY_API")
    t = resolve(given(api="10.0.0.2:2"), {**env, "GATEWAY_API": "http://10.0.0.1:1"})
    assert (t.api, t.api_from) == ("http://10.0.0.2:2", "--api")
    # --data beats GATEWAY_DATA
    other = tmp_path / "other"
    write_run_json(other, port=5151)
    assert resolve(given(data=str(other)), env).api == "http://127.0.0.1:5151"


def test_run_json_listening_on_any_address_means_loopback(tmp_path: Path) -> None:
    write_run_json(tmp_path, port=1, host="0.0.0.0")
    assert resolve(given(data=str(tmp_path)), {}).api == "http://127.0.0.1:1"
    write_run_json(tmp_path, port=1, host="::")
    assert resolve(given(data=str(tmp_path)), {}).api == "http://[::1]:1"
    write_run_json(tmp_path, port=1, host="192.0.2.7")
    assert resolve(given(data=str(tmp_path)), {}).api == "http://192.0.2.7:1"


def test_without_run_json_the_configured_address(tmp_path: Path) -> None:
    assert resolve(given(data=str(tmp_path)), {}).api_from == "default"
    assert resolve(given(data=str(tmp_path)), {}).api == "http://127.0.0.1:9080"
    (tmp_path / "gateway.toml").write_text("api_port = 9999\n")
    t = resolve(given(data=str(tmp_path)), {})
    assert (t.api, t.api_from) == ("http://127.0.0.1:9999", str(tmp_path / "gateway.toml"))
    t = resolve(given(data=str(tmp_path)), {"GATEWAY_API_PORT": "7777"})
    assert t.api == "http://127.0.0.1:7777"


def test_token_precedence_and_what_was_missing(tmp_path: Path) -> None:
    t = resolve(given(data=str(tmp_path)), {})
    assert t.token is None
    assert t.token_from == f"no {tmp_path / 'admin.token'}"
    rel = resolve(given(data="var"), {})
    assert rel.token_from == "no ./var/admin.token"  # as the user would type it
    (tmp_path / "admin.token").write_text("from-file\n")
    assert resolve(given(data=str(tmp_path)), {}).token == "from-file"
    t = resolve(given(data=str(tmp_path)), {"GATEWAY_TOKEN": "from-env"})
    assert (t.token, t.token_from) == ("from-env", "GATEWAY_TOKEN")
    t = resolve(given(data=str(tmp_path), token="given"), {"GATEWAY_TOKEN": "from-env"})
    assert (t.token, t.token_from) == ("given", "--token")


def test_an_unreadable_token_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "admin.token").mkdir()  # unreadable as a file, even for root
    t = resolve(given(data=str(tmp_path)), {})
    assert t.token is None
    assert t.token_from.startswith(f"cannot read {tmp_path / 'admin.token'}")


SCHEMAS: dict[str, Any] = {
    "components": {
        "schemas": {
            "Settings": {
                "type": "object",
                "properties": {
                    "host": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    "timeout_s": {"type": "number"},
                    "retries": {"type": "integer"},
                    "tag_fields": {"type": "array", "items": {"type": "string"}},
                    "field_map": {"type": "object"},
                    "template": {},
                    "mode": {"enum": ["a", "b"]},
                    "limits": {"$ref": "#/components/schemas/Limits"},
                },
            },
            "Limits": {
                "type": "object",
                "properties": {
                    "on": {"type": "boolean"},
                    "ports": {"type": "array", "items": {"type": "integer"}},
                },
            },
        }
    }
}


@pytest.mark.parametrize(
    ("key", "text", "want"),
    [
        ("host", "007", "007"),  # a string stays text however numeric it looks
        ("host", "null", None),
        ("timeout_s", "2.5", 2.5),
        ("timeout_s", "3", 3),
        ("retries", "4", 4),
        ("tag_fields", "site,model", ["site", "model"]),
        ("tag_fields", '["a,b"]', ["a,b"]),
        ("field_map", '{"t": "temp"}', {"t": "temp"}),
        ("template", '{"x": 1}', {"x": 1}),
        ("template", "plain", "plain"),
        ("mode", "b", "b"),
        ("limits.on", "false", False),
        ("limits.ports", "1, 2", [1, 2]),
    ],
)
def test_settings_are_converted_by_the_schema(key: str, text: str, want: Any) -> None:
    c = Contract(SCHEMAS)
    assert c.convert(c.field("Settings", key), text, key) == want


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("retries", "many", "retries is an integer, not 'many'"),
        ("limits.on", "maybe", "limits.on is a boolean"),
        ("nope", "1", "Settings has no setting 'nope' (known: field_map, host, limits"),
        ("limits.nope", "1", "limits has no setting 'nope' (known: on, ports)"),
        ("retries.x", "1", "retries has no parts to set"),
        ("field_map", "{bad", "field_map must be JSON here"),
    ],
)
def test_bad_settings_say_why(key: str, text: str, message: str) -> None:
    c = Contract(SCHEMAS)
    with pytest.raises(BadValue) as info:
        c.convert(c.field("Settings", key), text, key)
    assert message in str(info.value)


def spec(kind: str, *, location: str = "path", items: str | None = None) -> dict[str, Any]:
    return {"name": "id", "location": location, "type": kind, "items": items, "required": True}


@pytest.mark.parametrize(
    ("param", "text", "want"),
    [
        (spec("string"), "7", "7"),  # `call OP id=7` for a string id sends "7"
        (spec("integer"), "7", 7),
        (spec("number"), "7.5", 7.5),
        (spec("boolean"), "TRUE", True),
        (spec("array", location="query", items="integer"), "1,2, 3", [1, 2, 3]),
        (spec("array", location="query", items="string"), '["a", "b"]', ["a", "b"]),
        (spec("object", location="body"), '{"a": 1}', {"a": 1}),
        (spec("string", location="body"), "{not json", "{not json"),
    ],
)
def test_call_arguments_follow_the_document_types(
    param: dict[str, Any], text: str, want: Any
) -> None:
    assert _convert(param, text) == want


def test_call_arguments_of_the_wrong_type_say_so() -> None:
    with pytest.raises(BadValue, match="id is an integer in the document, not 'x'"):
        _convert(spec("integer"), "x")
    with pytest.raises(BadValue, match="request body"):
        _convert(spec("object", location="body"), "{")
