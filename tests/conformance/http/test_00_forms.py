"""The lenient form codec (docs/protocol.md §2.1, §2.4, §12 item 23).  Expected values are
written out by hand or come from the standard library, never from the codec itself."""

from __future__ import annotations

from urllib.parse import quote_plus, unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.device.http.forms import encode_component, parse_form, parse_names
from gateway.errors import BadRequest


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"a=1&b=2", [("a", "1"), ("b", "2")]),
        (b"data_in=%7B%22001%22%3A21.5%7D", [("data_in", '{"001":21.5}')]),
        (b"x=a+b%20c", [("x", "a b c")]),
        (b"x=100%&y=%zz%4", [("x", "100%"), ("y", "%zz%4")]),  # invalid % stays literal
        (b"k=v=w", [("k", "v=w")]),  # split at the first =
        (b"flag&&a=", [("flag", ""), ("a", "")]),
        (
            b'config_io={"a": "x&y=z", "b": [1, {"c": "}"}]}&n=1',
            [("config_io", '{"a": "x&y=z", "b": [1, {"c": "}"}]}'), ("n", "1")],
        ),
        (b'v={"q": "say \\"hi\\" & go"}', [("v", '{"q": "say \\"hi\\" & go"}')]),
        (b"v={unbalanced&w=1", [("v", "{unbalanced"), ("w", "1")]),
        (
            b"alias=data_in&1700000000=%7B%7D&1700000000.5=x",
            [("alias", "data_in"), ("1700000000", "{}"), ("1700000000.5", "x")],
        ),
        (b"", []),
    ],
)
def test_parse_form(body: bytes, expected: list[tuple[str, str]]) -> None:
    assert parse_form(body) == expected


def test_undecodable_bytes_are_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_form(b"a=%ff")
    with pytest.raises(BadRequest):
        parse_form(b"a=\xff")


def test_parse_names() -> None:
    assert parse_names(b"config_io&data_out&config_io&&x=1") == ["config_io", "data_out", "x"]


def test_encoding_matches_the_real_server() -> None:
    """S11 vector: lowercase escapes, ``+`` for space."""
    assert encode_component('{ "press": 2, "temp": 1 }') == (
        "%7b+%22press%22%3a+2%2c+%22temp%22%3a+1+%7d"
    )
    assert encode_component("abc-_.~XYZ09") == "abc-_.~XYZ09"
    assert encode_component("°C") == "%c2%b0C"


@given(st.text())
def test_round_trip_with_stdlib(text: str) -> None:
    encoded = encode_component(text)
    assert encoded.lower() == quote_plus(text, safe="~").lower()
    assert unquote_plus(encoded) == text
    assert parse_form(f"k={encoded}".encode()) == [("k", text)]
