"""Twin test: the compiled identity-format validator and its pure twin agree."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidValue

pure = importlib.import_module("gateway._pure.identity")
compiled = importlib.import_module("gateway._ext.identity")

KINDS = [*pure.IDENTITY_TYPES, "nonsense"]
CASINGS = ["mixed", "upper", "lower", "odd"]


def _outcome(mod: object, *args: object) -> str | None:
    try:
        mod.validate_identity(*args)  # type: ignore[attr-defined]
    except InvalidValue as exc:
        return str(exc)
    return None


def test_same_surface() -> None:
    assert pure.__all__ == compiled.__all__
    assert pure.IDENTITY_TYPES == compiled.IDENTITY_TYPES
    assert pure.MAX_IDENTITY_LENGTH == compiled.MAX_IDENTITY_LENGTH


identities = st.one_of(
    st.text(max_size=140),
    st.text(alphabet="0123456789abcdefABCDEF:-", max_size=40),
    st.uuids(version=4).map(str),
    st.from_regex(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", fullmatch=True),
)


@settings(max_examples=500, deadline=None)
@given(
    identities,
    st.sampled_from(KINDS),
    st.sampled_from(["", "AB", "x-"]),
    st.sampled_from(CASINGS),
    st.integers(0, 40),
)
def test_twins_agree(identity: str, kind: str, prefix: str, casing: str, length: int) -> None:
    ident = prefix + identity if identity and len(identity) % 2 else identity
    a = _outcome(pure, ident, kind, prefix, casing, length)
    b = _outcome(compiled, ident, kind, prefix, casing, length)
    assert a == b


@pytest.mark.parametrize(
    ("identity", "kind", "ok"),
    [
        ("00:1A:2b:3C:4d:5E", "mac:48", True),
        ("001A2B3C4D5E", "mac:48-nosep", True),
        ("00-1A-2B-3C-4D-5E", "mac:48", False),
        ("123", "base10", True),
        ("12a", "base10", False),
        ("dead", "base16", True),
        ("9f4c6b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b", "uuid:v4", True),
        ("9f4c6b1e-2a3d-1e5f-8a9b-0c1d2e3f4a5b", "uuid:v4", False),
        ("a/b", "opaque", False),
        ("a b", "opaque", False),
    ],
)
def test_known_values(identity: str, kind: str, ok: bool) -> None:
    for mod in (pure, compiled):
        assert (_outcome(mod, identity, kind, "", "mixed", 0) is None) is ok
