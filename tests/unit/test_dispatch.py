"""The resource-write dispatcher, both twins: routing, values, batches, validation.

Each test names the docs/protocol.md section it follows.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, NamedTuple

import pytest

from gateway._pure.dispatch import (
    CustomPublish,
    ProvisionRequest,
    Rejection,
    ResourceSpec,
)
from gateway.errors import BadRequest
from gateway.model import PointWrite

PURE_ONLY = os.environ.get("GATEWAY_PURE_PYTHON", "") not in ("", "0")
NOW = 1_700_000_000_000_000


class Writes(NamedTuple):
    """What a resource write appended to the caller's lists."""

    points: list[PointWrite]
    rejected: list[Rejection]


def dispatch(twin: ModuleType, table: object, topic: str, payload: bytes, now: int) -> Any:
    """``twin.dispatch`` with fresh lists: ``Writes`` for a resource write, else the result
    (and then nothing may have been appended)."""
    points: list[PointWrite] = []
    rejected: list[Rejection] = []
    result = twin.dispatch(table, topic, payload, now, points, rejected)
    if result is None:
        return Writes(points, rejected)
    assert points == []
    assert rejected == []
    return result


@pytest.fixture(params=["pure", "compiled"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "compiled" and PURE_ONLY:
        module: ModuleType = pytest.importorskip("gateway._ext.dispatch")
        return module
    return importlib.import_module(
        "gateway._ext.dispatch" if request.param == "compiled" else "gateway._pure.dispatch"
    )


SPECS = [
    ResourceSpec("data_in", "string"),
    ResourceSpec("temp", "number"),
    ResourceSpec("level", "number", (1, 3, "9-11", 21.5, "-5--2")),
    ResourceSpec("on", "boolean"),
    ResourceSpec("mode", "string", ("auto", "manual"), settable=True),
]


@pytest.fixture
def table(twin: ModuleType) -> object:
    return twin.ResourceTable(SPECS)


def test_provision_request(twin: ModuleType, table: object) -> None:
    """§3.2: ``$provision/<identity>``; the payload (empty, password or PEM) is kept."""
    assert dispatch(twin, table, "$provision/00AB01FF", b"", NOW) == ProvisionRequest(
        "00AB01FF", b""
    )
    assert dispatch(twin, table, "$provision/a/b", b"pw", NOW) == ProvisionRequest("a/b", b"pw")


@pytest.mark.parametrize("topic", ["$provision/", "$provision"])
def test_provision_without_identity(twin: ModuleType, table: object, topic: str) -> None:
    with pytest.raises(BadRequest, match="without"):
        dispatch(twin, table, topic, b"", NOW)


def test_resource_write_now(twin: ModuleType, table: object) -> None:
    """§3.3: ``$resource/<alias>`` writes the UTF-8 payload at the server time."""
    result = dispatch(twin, table, "$resource/temp", b"98.7", NOW)
    assert result == Writes([PointWrite("temp", "98.7", NOW, True)], [])
    result = dispatch(twin, table, "$resource/data_in", '{"001":21.5,"é":1}'.encode(), NOW)
    assert result.points == [PointWrite("data_in", '{"001":21.5,"é":1}', NOW, True)]


def test_settable_rows_and_the_caller_lists(twin: ModuleType, table: object) -> None:
    """§4.2: a write to a settable resource is a row that also sets ``set``; rows of several
    PUBLISHes go into the caller's one list, in order (one ``DataIn`` per MQTT read)."""
    points: list[PointWrite] = []
    rejected: list[Rejection] = []
    assert twin.dispatch(table, "$resource/mode", b"auto", NOW, points, rejected) is None
    assert twin.dispatch(table, "$resource/mode", b"off", NOW, points, rejected) is None
    assert twin.dispatch(table, "$resource/temp", b"1", NOW + 1, points, rejected) is None
    assert points == [
        PointWrite("mode", "auto", NOW, True, settable=True),
        PointWrite("temp", "1", NOW + 1, True),
    ]
    assert [(r.alias, r.value) for r in rejected] == [("mode", "off")]


def test_a_refused_batch_appends_nothing(twin: ModuleType, table: object) -> None:
    """A batch whose second entry is unusable is refused whole: the rows its first entry
    produced are not left in the caller's list."""
    points: list[PointWrite] = [PointWrite("temp", "1", NOW, True)]
    rejected: list[Rejection] = []
    payload = b'[{"timestamp":5,"values":{"temp":1,"on":"x"}},{"timestamp":-1,"values":{"a":1}}]'
    with pytest.raises(BadRequest, match="negative"):
        twin.dispatch(table, "$resource.batch", payload, NOW, points, rejected)
    assert points == [PointWrite("temp", "1", NOW, True)]
    assert rejected == []


def test_undefined_alias_goes_to_the_event_log(twin: ModuleType, table: object) -> None:
    """§4.2: undefined aliases are not errors; they are marked undefined."""
    result = dispatch(twin, table, "$resource/uptime", b"anything", NOW)
    assert result == Writes([PointWrite("uptime", "anything", NOW, False)], [])


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("$resource/", "resource alias is empty"),
        ("$resource/a/b", "resource alias 'a/b' contains '/'"),
        ("$resource/a.b", "resource alias 'a.b' contains '.'"),
        ("$resource/$x", "resource alias '$x' contains '$'"),
        ("$resource/a+", "resource alias 'a+' contains '+'"),
        ("$resource", "$resource topic without a /<name> level"),
    ],
)
def test_bad_alias_topics(twin: ModuleType, table: object, topic: str, message: str) -> None:
    """§4.1: alias pattern ``^[^.$]+$``, and no MQTT level separator or wildcard."""
    with pytest.raises(BadRequest) as info:
        dispatch(twin, table, topic, b"1", NOW)
    assert str(info.value) == message


def test_non_utf8_value(twin: ModuleType, table: object) -> None:
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        dispatch(twin, table, "$resource/data_in", b"\xff", NOW)


@pytest.mark.parametrize("topic", ["sensors/1", "$SYS/x", "$resourcex", "", "$resource.batchy"])
def test_custom_publish(twin: ModuleType, table: object, topic: str) -> None:
    """§3.3: any other topic is a custom message for the event log."""
    assert dispatch(twin, table, topic, b"\x00\xff", NOW) == CustomPublish(topic, b"\x00\xff")


@pytest.mark.parametrize(
    ("alias", "value", "reason"),
    [
        ("temp", "98.7", None),
        ("temp", "-3", None),
        ("temp", "1e3", None),
        ("temp", ".5", None),
        ("temp", "1E-2", None),
        ("temp", "abc", "value is not a number"),
        ("temp", "", "value is not a number"),
        ("temp", " 1", "value is not a number"),
        ("temp", "NaN", "value is not a number"),
        ("temp", "1e999", "value is not a finite number"),
        ("on", "true", None),
        ("on", "false", None),
        ("on", "True", "value is not true or false"),
        ("on", "1", "value is not true or false"),
        ("level", "3", None),
        ("level", "3.0", None),
        ("level", "9", None),
        ("level", "10.5", None),
        ("level", "11", None),
        ("level", "-3", None),
        ("level", "21.5", None),
        ("level", "12", "value is not one of the allowed values"),
        ("level", "2", "value is not one of the allowed values"),
        ("mode", "auto", None),
        ("mode", "Auto", "value is not one of the allowed values"),
        ("data_in", "x" * 1_048_576, None),
        ("data_in", "x" * 1_048_577, "value is longer than 1048576 bytes"),
        ("data_in", "é" * 524_288, None),
        ("data_in", "é" * 524_289, "value is longer than 1048576 bytes"),
        ("undefined", "anything", None),
    ],
)
def test_validate_value(
    twin: ModuleType, table: object, alias: str, value: str, reason: str | None
) -> None:
    """§4.1: format (number finite, boolean exactly true/false, string ≤ 1 MiB) and allowed
    (numbers numerically, ranges inclusive, strings exactly)."""
    assert twin.validate_value(table, alias, value) == reason


def test_rejected_value_is_reported_not_written(twin: ModuleType, table: object) -> None:
    """§12 item 13: a failing value is dropped (and reported); the session still PUBACKs."""
    result = dispatch(twin, table, "$resource/on", b"yes", NOW)
    assert result == Writes([], [Rejection("on", "yes", NOW, "value is not true or false")])


@pytest.mark.parametrize(
    ("number", "micros"),
    [
        (1_700_000_000, 1_700_000_000_000_000),  # seconds
        (1_700_000_000.25, 1_700_000_000_250_000),
        (99_999_999_999, 99_999_999_999_000_000),  # just under 1e11: still seconds
        (100_000_000_000, 100_000_000_000_000),  # 1e11: milliseconds
        (1_700_000_000_123, 1_700_000_000_123_000),
        (1_700_000_000_123.5, 1_700_000_000_123_500),
        (99_999_999_999_999, 99_999_999_999_999_000),  # just under 1e14: milliseconds
        (100_000_000_000_000, 100_000_000_000_000),  # 1e14: microseconds
        (1_700_000_000_123_456, 1_700_000_000_123_456),
        (0, 0),
    ],
)
def test_normalize_timestamp(twin: ModuleType, number: float, micros: int) -> None:
    """§3.3: batch timestamps by magnitude: < 1e11 s, < 1e14 ms, else µs."""
    result = twin.normalize_timestamp(number)
    assert result == micros
    assert type(result) is int


@pytest.mark.parametrize("number", [-1, True, "1", float("nan"), float("inf"), 10**18])
def test_normalize_timestamp_refuses(twin: ModuleType, number: object) -> None:
    with pytest.raises(BadRequest, match="timestamp"):
        twin.normalize_timestamp(number)


def test_batch(twin: ModuleType, table: object) -> None:
    """§3.3 ``$resource.batch``: strings as is, other JSON values as compact JSON text."""
    payload = (
        b'[{"timestamp":1700000000123456,"values":{"data_in":"{\\"001\\":21.5}"}},'
        b' {"timestamp": 1700000001, "values": {"temp": 3601, "on": true, "x": {"a": 1},'
        b' "y": null, "z": [1, 2.5]}}]'
    )
    result = dispatch(twin, table, "$resource.batch", payload, NOW)
    t2 = 1_700_000_001_000_000
    assert result == Writes(
        [
            PointWrite("data_in", '{"001":21.5}', 1_700_000_000_123_456, True, replay_check=True),
            PointWrite("temp", "3601", t2, True, replay_check=True),
            PointWrite("on", "true", t2, True, replay_check=True),
            PointWrite("x", '{"a":1}', t2, False, replay_check=True),
            PointWrite("y", "null", t2, False, replay_check=True),
            PointWrite("z", "[1,2.5]", t2, False, replay_check=True),
        ],
        [],
    )


def test_batch_same_timestamp_and_duplicates(twin: ModuleType, table: object) -> None:
    """§12 item 14: several points at one timestamp are kept in order; exact duplicates
    (alias, timestamp, value) within one batch are kept once."""
    payload = (
        b'[{"timestamp":1700000000,"values":{"temp":1}},'
        b'{"timestamp":1700000000,"values":{"temp":2}},'
        b'{"timestamp":1700000000000,"values":{"temp":1}},'
        b'{"timestamp":1700000000000000,"values":{"temp":"1"}},'
        b'{"timestamp":1700000000,"values":{"temp":"1.0"}}]'
    )
    result = dispatch(twin, table, "$resource.batch", payload, NOW)
    ts = 1_700_000_000_000_000
    assert result == Writes(
        [
            PointWrite("temp", "1", ts, True, replay_check=True),
            PointWrite("temp", "2", ts, True, replay_check=True),
            PointWrite("temp", "1.0", ts, True, replay_check=True),
        ],
        [],
    )


def test_batch_rejections(twin: ModuleType, table: object) -> None:
    payload = b'[{"timestamp":5,"values":{"level":12,"mode":"auto","on":"yes"}}]'
    result = dispatch(twin, table, "$resource.batch", payload, NOW)
    mode = PointWrite("mode", "auto", 5_000_000, True, settable=True, replay_check=True)
    assert result.points == [mode]
    assert [(r.alias, r.value, r.reason) for r in result.rejected] == [
        ("level", "12", "value is not one of the allowed values"),
        ("on", "yes", "value is not true or false"),
    ]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b'{"timestamp":1,"values":{}}', "Expected `array`, got `object`"),
        (b'[{"values":{}}]', "missing required field `timestamp`"),
        (b'[{"timestamp":"1","values":{}}]', "Expected `int | float`, got `str`"),
        (b'[{"timestamp":true,"values":{}}]', "got `bool`"),
        (b'[{"timestamp":1,"values":[]}]', "Expected `object`, got `array`"),
        (b"[", "truncated"),
        (b"\xff", "JSON"),
    ],
)
def test_batch_bad_shape(twin: ModuleType, table: object, payload: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        dispatch(twin, table, "$resource.batch", payload, NOW)
    assert str(info.value).startswith("$resource.batch payload is not a JSON array")
    assert fragment in str(info.value)


def test_batch_bad_alias_and_timestamp(twin: ModuleType, table: object) -> None:
    with pytest.raises(BadRequest, match=r"contains '\.'"):
        dispatch(twin, table, "$resource.batch", b'[{"timestamp":1,"values":{"a.b":1}}]', NOW)
    with pytest.raises(BadRequest, match="negative"):
        dispatch(twin, table, "$resource.batch", b'[{"timestamp":-1,"values":{"a":1}}]', NOW)


def test_empty_batch(twin: ModuleType, table: object) -> None:
    assert dispatch(twin, table, "$resource.batch", b"[]", NOW) == Writes([], [])


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([ResourceSpec("a", "float")], "format 'float' is not one of"),
        ([ResourceSpec("a", "string"), ResourceSpec("a", "number")], "defined twice"),
        ([ResourceSpec("a.b", "string")], "contains '.'"),
        ([ResourceSpec("n", "number", ("x",))], "neither a number nor a range"),
        ([ResourceSpec("n", "number", ("11-9",))], "neither a number nor a range"),
        ([ResourceSpec("n", "number", (True,))], "neither a number nor a range"),
        ([ResourceSpec("b", "boolean", ("yes",))], "is not a boolean"),
    ],
)
def test_table_refuses_bad_definitions(
    twin: ModuleType, specs: list[ResourceSpec], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        twin.ResourceTable(specs)


def test_table_lookup(twin: ModuleType, table: object) -> None:
    assert table.get("temp") == SPECS[1]  # type: ignore[attr-defined]
    assert table.get("nope") is None  # type: ignore[attr-defined]
    assert "mode" in table  # type: ignore[operator]
    assert len(table) == len(SPECS)  # type: ignore[arg-type]
    assert list(table) == SPECS  # type: ignore[call-overload]
