"""Sans-IO request building beyond JSON: collection formats, form and multipart bodies,
files, security alternatives, OAuth2 token requests and caching, and transport failures
told in one sentence.  Expected bytes are written out by hand, never produced by the
encoder under test."""

from __future__ import annotations

import base64
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.services.integrations.encoding import (
    FilePart,
    ParameterInvalid,
    encode_multipart,
    file_part,
)
from gateway.services.integrations.oauth2 import (
    TokenCache,
    parse_token_response,
    token_request,
    token_url,
)
from gateway.services.integrations.operations import (
    NotConfigured,
    UpstreamError,
    authorize,
    choose_requirement,
    prepare,
)
from gateway.services.integrations.reasons import transport_failure
from gateway.services.integrations.validate import parse_document

DATA = Path(__file__).parents[1] / "data"
OAUTH = parse_document((DATA / "pump-fleet-oauth2.yaml").read_text())
CONFIG = {"client_id": "cid", "client_secret": "S3CRET"}
BASE = "https://h"


def build(operation: str, params: dict[str, Any], config: dict[str, Any] = CONFIG) -> Any:
    return prepare(OAUTH, OAUTH.operations[operation], params, config, base=BASE)


def test_each_collection_format_in_the_query_and_a_header() -> None:
    req = build(
        "searchPumps",
        {
            "ids": ["p-1", "p-2"],
            "sites": ["north", "south"],
            "models": ["PX-300", "QX"],
            "tags": ["a", "b c"],
            "fields": ["id", "site"],
            "limits": ["3", 4],  # text items of an integer array are converted
            "X-Sites": ["east", "west"],
        },
    )
    assert req.query == [
        ("ids", "p-1,p-2"),
        ("sites", "north"),
        ("sites", "south"),
        ("models", "PX-300 QX"),
        ("tags", "a\tb c"),
        ("fields", "id|site"),
        ("limits", "3,4"),
    ]
    assert req.headers["X-Sites"] == "east|west"
    assert req.content is None
    # what goes on the wire: form-style query encoding, separators percent-encoded
    wire = httpx.URL(req.url, params=httpx.QueryParams(tuple(req.query)))
    assert wire.query == (
        b"ids=p-1%2Cp-2&sites=north&sites=south&models=PX-300+QX&tags=a%09b+c"
        b"&fields=id%7Csite&limits=3%2C4"
    )


def test_array_in_the_path_is_joined_then_percent_encoded() -> None:
    req = build("pumpBatch", {"ids": ["p 1", "p/2"]})
    assert req.url == "https://h/api/v1.0/batch/p%201%2Cp%2F2"


@pytest.mark.parametrize(
    ("param", "item", "what"),
    [
        ("ids", "a,b", "comma"),
        ("models", "PX 200", "space"),
        ("tags", "x\ty", "tab"),
        ("X-Sites", "n|s", "pipe"),
    ],
)
def test_an_item_holding_its_separator_is_refused(param: str, item: str, what: str) -> None:
    with pytest.raises(ParameterInvalid, match=f"contains the {what} that separates"):
        build("searchPumps", {param: ["ok", item]})


def test_multi_items_may_hold_anything() -> None:
    req = build("searchPumps", {"sites": ["a,b", "c|d e"]})
    assert req.query == [("sites", "a,b"), ("sites", "c|d e")]


def test_array_items_are_type_checked() -> None:
    with pytest.raises(ParameterInvalid, match=r"parameter limits\[1\]: expected integer"):
        build("searchPumps", {"limits": [1, "two"]})
    with pytest.raises(ParameterInvalid, match="must be one of"):
        build("searchPumps", {"fields": ["id", "colour"]})


def test_form_urlencoded_body() -> None:
    req = build(
        "addNote",
        {
            "pumpId": "p-1",
            "text": "seal leaks & hums",
            "priority": "4",
            "urgent": True,
            "labels": ["seal", "noise"],
            "codes": ["E1", "E7"],
        },
    )
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.content == (
        b"text=seal+leaks+%26+hums&priority=4&urgent=true&labels=seal&labels=noise&codes=E1%7CE7"
    )
    with pytest.raises(ParameterInvalid, match="'text' \\(formData\\) is required"):
        build("addNote", {"pumpId": "p-1"})


def test_multipart_body_with_a_file_is_rfc_7578() -> None:
    body, ctype = encode_multipart(
        [("version", "2.1"), ("channels", "beta,stable")],
        [FilePart("image", 'fw "v2".bin', "application/octet-stream", b"\x00\r\n--x\xff")],
        boundary="BOUNDARY",
    )
    assert ctype == "multipart/form-data; boundary=BOUNDARY"
    assert body == (
        b"--BOUNDARY\r\n"
        b'Content-Disposition: form-data; name="version"\r\n\r\n'
        b"2.1\r\n"
        b"--BOUNDARY\r\n"
        b'Content-Disposition: form-data; name="channels"\r\n\r\n'
        b"beta,stable\r\n"
        b"--BOUNDARY\r\n"
        b'Content-Disposition: form-data; name="image"; filename="fw %22v2%22.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"\x00\r\n--x\xff\r\n"
        b"--BOUNDARY--\r\n"
    )


def test_operation_with_a_file_goes_multipart() -> None:
    image = {"filename": "fw.bin", "content_base64": base64.b64encode(b"\x01\x02").decode()}
    req = build("uploadFirmware", {"pumpId": "p-1", "image": image, "version": "2.1"})
    ctype = req.headers["Content-Type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    boundary = ctype.split("=", 1)[1].encode()
    assert req.content is not None
    assert req.content.startswith(b"--" + boundary + b"\r\n")
    part = b'name="image"; filename="fw.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    assert part in req.content
    assert b"\r\n\r\n\x01\x02\r\n--" + boundary + b"--\r\n" in req.content


def test_file_values() -> None:
    assert file_part("f", "text") == FilePart("f", "f", "application/octet-stream", b"text")
    assert file_part("f", b"\x00") == FilePart("f", "f", "application/octet-stream", b"\x00")
    assert file_part("f", {"filename": "a.csv", "content_type": "text/csv", "content": "x"}) == (
        FilePart("f", "a.csv", "text/csv", b"x")
    )
    for bad, why in [
        (3, "give its text, or an object"),
        ({"content": "x", "content_base64": "eA=="}, "exactly one of"),
        ({"content_base64": "!!"}, "not base64"),
        ({"content": "x", "size": 1}, "unknown file field"),
        ({"content": "x", "content_type": "text/plain\r\nX-Evil: 1"}, "control characters"),
    ]:
        with pytest.raises(ParameterInvalid, match=why):
            file_part("f", bad)


def test_oauth2_requirement_is_left_for_a_token() -> None:
    req = build("listPumps", {})
    assert "Authorization" not in req.headers
    assert req.oauth2 is not None
    assert (req.oauth2.scheme, req.oauth2.scopes) == ("pumpOAuth", ("assets:read",))
    write = build("addNote", {"pumpId": "p", "text": "t"}).oauth2
    assert write is not None
    assert write.scopes == ("assets:write",)
    authorized = authorize(req, "tok-123")
    assert authorized.headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" in authorized.secrets
    assert authorized.oauth2 is None
    assert build("health", {}).oauth2 is None  # security: [] on the operation
    with pytest.raises(NotConfigured, match="'client_secret' is not set"):
        build("listPumps", {}, {"client_id": "cid"})


def test_security_alternatives_take_the_first_configured() -> None:
    text = (DATA / "pump-fleet-basic.yaml").read_text()
    text = text.replace(
        "security:\n  - basicAuth: []\n",
        "  keyAuth:\n    type: apiKey\n    description: A key header.\n    name: X-Key\n"
        "    in: header\n    x-exosite-secret-field: key\n"
        "security:\n  - basicAuth: []\n  - keyAuth: []\n",
    ).replace(
        "x-exosite-config-parameters:\n",
        "x-exosite-config-parameters:\n  - name: key\n    description: API key\n"
        "    type: string\n    format: password\n",
    )
    spec = parse_document(text)
    op = spec.operations["assets"]
    assert [u.scheme for u in choose_requirement(spec, op, {"key": "K"})] == ["keyAuth"]
    both = {"key": "K", "username": "u", "password": "p"}
    assert [u.scheme for u in choose_requirement(spec, op, both)] == ["basicAuth"]
    req = prepare(spec, op, {}, {"key": "K"}, base=BASE)
    assert req.headers["X-Key"] == "K"
    assert "Authorization" not in req.headers
    with pytest.raises(NotConfigured, match="basicAuth: configuration parameter 'password'"):
        choose_requirement(spec, op, {})


def test_token_request_authenticates_the_client_as_rfc_6749_says() -> None:
    scheme = OAUTH.security_schemes["pumpOAuth"]
    headers, body = token_request(scheme, ["assets:read", "assets:write"], "id:1", "s e/c")
    assert body == b"grant_type=client_credentials&scope=assets%3Aread+assets%3Awrite"
    # §2.3.1: id and secret are form-encoded before they become the basic pair
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"id%3A1:s+e%2Fc").decode()
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    body_scheme = type(scheme)(**{**_fields(scheme), "client_auth": "body"})
    headers, body = token_request(body_scheme, [], "id", "sec")
    assert "Authorization" not in headers
    assert body == b"grant_type=client_credentials&client_id=id&client_secret=sec"


def _fields(struct: Any) -> dict[str, Any]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


def test_token_responses() -> None:
    what = "OAuth2 token request (pumpOAuth): POST /oauth/token"
    ok = b'{"access_token": "T", "token_type": "Bearer", "expires_in": 3600}'
    assert parse_token_response(200, ok, what=what, secrets=()) == ("T", 3600.0)
    text_expiry = b'{"access_token": "T", "token_type": "bearer", "expires_in": "60"}'
    assert parse_token_response(200, text_expiry, what=what, secrets=()) == ("T", 60.0)
    no_expiry = b'{"access_token": "T", "token_type": "bearer"}'
    assert parse_token_response(200, no_expiry, what=what, secrets=()) == ("T", None)
    with pytest.raises(UpstreamError, match="only bearer tokens") as info:
        parse_token_response(
            200, b'{"access_token": "T", "token_type": "mac"}', what=what, secrets=()
        )
    assert info.value.code == "upstream_auth_failed"
    with pytest.raises(UpstreamError, match="without an access_token"):
        parse_token_response(200, b'{"token_type": "bearer"}', what=what, secrets=())
    refused = b'{"error": "invalid_client", "error_description": "secret S3CRET is wrong"}'
    with pytest.raises(UpstreamError) as info:
        parse_token_response(401, refused, what=what, secrets=["S3CRET"])
    assert info.value.message == f"{what} answered 401: invalid_client (secret *** is wrong)"
    assert (info.value.code, info.value.retryable) == ("upstream_auth_failed", False)
    with pytest.raises(UpstreamError) as info:
        parse_token_response(503, b"down", what=what, secrets=())
    assert (info.value.code, info.value.retryable) == ("upstream_error", True)


def test_token_url_follows_the_host_override() -> None:
    scheme = OAUTH.security_schemes["pumpOAuth"]
    url = token_url(scheme, OAUTH, base="https://127.0.0.1:9", host="127.0.0.1:9")
    assert url == "https://127.0.0.1:9/oauth/token"
    assert token_url(scheme, OAUTH, base="https://pumps.example.com", host=None) == (
        "https://pumps.example.com/oauth/token"
    )
    elsewhere = type(scheme)(**{**_fields(scheme), "token_url": "https://idp.example/t"})
    assert token_url(elsewhere, OAUTH, base="https://x", host="x") == "https://idp.example/t"
    relative = type(scheme)(**{**_fields(scheme), "token_url": "/auth/token"})
    assert token_url(relative, OAUTH, base="https://x:1", host="x:1") == "https://x:1/auth/token"


def test_token_cache_renews_before_expiry_and_drops_only_the_refused_token() -> None:
    cache = TokenCache()
    key = ("pumpOAuth", ("assets:read",))
    cache.put(key, "T1", 3600, now=1000.0)
    assert cache.get(key, 1000.0 + 3569) == "T1"
    assert cache.get(key, 1000.0 + 3570) is None  # 30 s margin
    cache.put(key, "T2", 10, now=0.0)
    assert cache.get(key, 8.9) == "T2"
    assert cache.get(key, 9.0) is None  # short-lived: a tenth of its lifetime
    cache.put(key, "T3", None, now=0.0)
    assert cache.get(key, 1e9) == "T3"  # no expires_in: kept until the API refuses it
    cache.drop(key, "T2")  # an older token refused late: the current one stays
    assert cache.get(key, 0.0) == "T3"
    cache.drop(key, "T3")
    assert cache.get(key, 0.0) is None
    assert "T3" not in repr(cache)


def _failure(cause: BaseException, cls: type[httpx.HTTPError] = httpx.ConnectError) -> str:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise cls("") from inner
    except httpx.HTTPError as exc:
        return transport_failure(exc, target="api.example:443", timeout_s=10.0)


def test_transport_failures_in_one_sentence() -> None:
    refused = ExceptionGroup("all attempts failed", [ConnectionRefusedError(111, "refused")])
    assert _failure(OSError("all attempts to connect failed")) == (
        "the request to api.example:443 failed: all attempts to connect failed"
    )
    wrapped = OSError("all attempts to connect to api.example:443 failed")
    wrapped.__cause__ = refused
    assert _failure(wrapped) == "could not connect to api.example:443: the connection was refused"
    assert _failure(socket.gaierror(-2, "Name or service not known")) == (
        "could not connect to api.example:443: the host name api.example does not resolve"
    )
    untrusted = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] (_ssl.c:1006)")
    untrusted.verify_code, untrusted.verify_message = 20, "unable to get local issuer certificate"
    assert _failure(untrusted) == (
        "the TLS certificate of api.example:443 is not trusted (unable to get local issuer "
        "certificate); set ca_bundle to the CA that issued it"
    )
    mismatch = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch"
    assert "is not valid for that host name" in _failure(mismatch)
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    wrong.reason = "WRONG_VERSION_NUMBER"
    assert _failure(wrong) == "the TLS handshake with api.example:443 failed (wrong version number)"
    assert _failure(TimeoutError(), httpx.ConnectTimeout) == (
        "could not connect to api.example:443 within 10 s"
    )
    assert (
        _failure(TimeoutError(), httpx.ReadTimeout) == "api.example:443 did not answer within 10 s"
    )
    assert _failure(ValueError("x"), httpx.RemoteProtocolError) == (
        "api.example:443 closed the connection without a complete answer"
    )
    assert _failure(ConnectionResetError(104, "Connection reset by peer")) == (
        "the connection to api.example:443 failed: connection reset by peer"
    )
