"""Differential tests: the compiled and the pure dispatcher agree on random input.

Random resource tables (including invalid definitions), topics, payloads (valid and broken
``$resource.batch`` JSON, random bytes) and values: both twins must return equal Structs or
raise the same exception class with the same message.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from types import ModuleType

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._pure import dispatch as pure
from gateway.errors import BadRequest, GatewayError


def _compiled() -> ModuleType:
    """The compiled twin; the default build must have it (no silent skip)."""
    if os.environ.get("GATEWAY_PURE_PYTHON", "") not in ("", "0"):
        module: ModuleType = pytest.importorskip("gateway._ext.dispatch")
        return module
    return importlib.import_module("gateway._ext.dispatch")


compiled = _compiled()

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_aliases = st.sampled_from(["a", "n", "s", "b", "data_in", "x", "é"])
_bad_aliases = st.sampled_from(["", "a.b", "$x", "a/b", "+", "#"])
_numbers_text = st.one_of(
    st.from_regex(
        r"-?(?:[0-9]{1,4}(?:\.[0-9]{0,3})?|\.[0-9]{1,3})(?:[eE][+-]?[0-9]{1,3})?", fullmatch=True
    ),
    st.sampled_from(
        ["1e999", "-0", "nan", "inf", " 1", "1 ", "+1", "1_0", "٣", "5.", ".", "-", "1e"]
    ),
    st.text(alphabet="0123456789.-+eE ", max_size=6),
)
_allowed_entry = st.one_of(
    st.integers(-20, 20),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    _numbers_text,
    st.builds(lambda a, b: f"{a}-{b}", st.integers(-20, 20), st.integers(-20, 30)),
    st.text(max_size=4),
)
_specs = st.builds(
    pure.ResourceSpec,
    st.one_of(_aliases, _aliases, _aliases, _bad_aliases),
    st.sampled_from(["string", "number", "boolean", "number", "float"]),
    st.lists(_allowed_entry, max_size=4).map(tuple),
    st.booleans(),
    st.booleans(),
)
_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        _numbers_text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
_timestamps = st.one_of(
    st.integers(-10, 3 * 10**17),
    st.sampled_from([0, 1_700_000_000, 1_700_000_000_123, 1_700_000_000_123_456, 10**11, 10**14]),
    st.floats(min_value=-1, max_value=3e17),
    st.booleans(),
    st.text(max_size=3),
)
_entries = st.lists(
    st.fixed_dictionaries(
        {
            "timestamp": _timestamps,
            "values": st.dictionaries(st.one_of(_aliases, _bad_aliases), _json_values, max_size=4),
        }
    ),
    max_size=5,
)
_batch_payloads = st.one_of(
    _entries.map(msgspec.json.encode),
    # duplicated entries exercise the exact-duplicate rule
    _entries.map(lambda e: msgspec.json.encode(e + e)),
    st.binary(max_size=40),
    _json_values.map(msgspec.json.encode),
)
_topics = st.one_of(
    st.builds(lambda a: "$resource/" + a, st.one_of(_aliases, _bad_aliases, st.text(max_size=5))),
    st.just("$resource.batch"),
    st.builds(lambda i: "$provision/" + i, st.text(max_size=6)),
    st.sampled_from(["$resource", "$provision", "$resourcex", "$", "", "a/b", "$SYS/x"]),
    st.text(max_size=10),
)
_payloads = st.one_of(
    _numbers_text.map(str.encode),
    st.sampled_from([b"true", b"false", b"True", b"\xff", b"", b"a", b"b"]),
    st.text(max_size=10).map(str.encode),
    st.binary(max_size=10),
)


def outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return ("ok", fn(*args))
    except GatewayError as exc:
        return ("error", type(exc), str(exc))


def dispatched(module: ModuleType, *args: object) -> object:
    """``dispatch`` with lists that already hold a row: the result and what was appended
    (a refusal must leave the lists as they were)."""
    points: list[object] = ["before"]
    rejected: list[object] = ["before"]
    return (outcome(module.dispatch, *args, points, rejected), points, rejected)


def tables(specs: list[pure.ResourceSpec]) -> tuple[object, object]:
    a = outcome(pure.ResourceTable, specs)
    b = outcome(compiled.ResourceTable, specs)
    if a[0] == "error":  # type: ignore[index]
        assert b == a
        return None, None
    assert b[0] == "ok"  # type: ignore[index]
    return a[1], b[1]  # type: ignore[index]


def both(mod_a: ModuleType, mod_b: ModuleType, name: str, *args: object) -> None:
    assert outcome(getattr(mod_a, name), *args) == outcome(getattr(mod_b, name), *args)


@SETTINGS
@given(
    st.lists(_specs, max_size=5),
    _topics,
    st.one_of(_payloads, _batch_payloads),
    st.integers(0, 2**62),
)
def test_dispatch_agrees(
    specs: list[pure.ResourceSpec], topic: str, payload: bytes, now: int
) -> None:
    table_py, table_c = tables(specs)
    if table_py is None:
        return
    assert dispatched(pure, table_py, topic, payload, now) == dispatched(
        compiled, table_c, topic, payload, now
    )


@SETTINGS
@given(st.lists(_specs, max_size=5), _batch_payloads)
def test_batches_agree(specs: list[pure.ResourceSpec], payload: bytes) -> None:
    table_py, table_c = tables(specs)
    if table_py is None:
        return
    a = dispatched(pure, table_py, "$resource.batch", payload, 1)
    assert a == dispatched(compiled, table_c, "$resource.batch", payload, 1)


@SETTINGS
@given(st.lists(_specs, max_size=5), _aliases, st.one_of(_numbers_text, st.text(max_size=6)))
def test_validate_value_agrees(specs: list[pure.ResourceSpec], alias: str, value: str) -> None:
    table_py, table_c = tables(specs)
    if table_py is None:
        return
    assert pure.validate_value(table_py, alias, value) == compiled.validate_value(  # type: ignore[arg-type]
        table_c, alias, value
    )


@SETTINGS
@given(_timestamps)
def test_normalize_timestamp_agrees(number: object) -> None:
    a = outcome(pure.normalize_timestamp, number)
    assert a == outcome(compiled.normalize_timestamp, number)
    if a[0] == "ok":  # type: ignore[index]
        assert isinstance(a[1], int)  # type: ignore[index]
        assert not isinstance(number, bool)
        assert isinstance(number, int | float)
        assert math.isfinite(number)


@pytest.mark.parametrize("depth", [2_000, 100_000])
@pytest.mark.parametrize("where", ["values", "value"])
def test_deeply_nested_batch_is_bad_request_in_both(depth: int, where: str) -> None:
    """A ``$resource.batch`` nested deeper than the decoder's recursion limit is a
    ``BadRequest`` (dropped and debug-logged by MQTT), never a RecursionError."""
    nested = b"[" * depth + b"]" * depth
    if where == "values":
        payload = b'[{"timestamp": 1, "values": ' + nested + b"}]"
    else:
        payload = b'[{"timestamp": 1, "values": {"a": ' + nested + b"}}]"
    table_py, table_c = tables([])
    a = dispatched(pure, table_py, "$resource.batch", payload, 1)
    assert a == dispatched(compiled, table_c, "$resource.batch", payload, 1)
    result, points, rejected = a  # type: ignore[misc]
    assert result[0] == "error", a
    assert result[1] is BadRequest
    assert points == rejected == ["before"]  # nothing appended
