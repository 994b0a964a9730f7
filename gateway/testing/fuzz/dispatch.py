"""Fuzz target: the resource-write dispatcher, compiled and pure twins side by side.

Input: one control byte (which of three resource tables, which server time), then a topic,
a NUL byte and the payload (no NUL: the whole rest is a ``$resource.batch`` payload).

Invariants:

* both twins return equal results, append equal rows and rejections, or raise the same
  class with the same message, for :func:`dispatch`, :func:`validate_value` of the payload
  text on every alias, and :func:`normalize_timestamp` of numbers read from the payload;
* the only exception is :class:`~gateway.errors.BadRequest`;
* a refused PUBLISH appends no row and no rejection; a ``$resource/<alias>`` write appends
  exactly one row or one rejection, at the server time; every row's timestamp is within
  ``0..MAX_TIMESTAMP_US``.
"""

from __future__ import annotations

import importlib
import math
import struct
from collections.abc import Callable
from types import ModuleType

from gateway._pure import dispatch as pure
from gateway.errors import BadRequest
from gateway.model import PointWrite, Rejection

__all__ = ["NAME", "check", "seeds"]

NAME = "dispatch"
compiled: ModuleType = importlib.import_module("gateway._ext.dispatch")

_SPECS = [
    [],
    [
        pure.ResourceSpec("n", "number", (), True, False),
        pure.ResourceSpec("s", "string", ("on", "off"), True, True),
        pure.ResourceSpec("b", "boolean", (), False, False),
        pure.ResourceSpec("data_in", "string", (), True, False),
    ],
    [
        pure.ResourceSpec("r", "number", ("0-10", "20-30.5", 99), True, False),
        pure.ResourceSpec("é", "string", (), True, True),
    ],
]
_TABLES = [(pure.ResourceTable(s), compiled.ResourceTable(s)) for s in _SPECS]
_ALIASES = ["n", "s", "b", "data_in", "r", "é", "x"]
_NOWS = (0, 1, 1_700_000_000_000_000, pure.MAX_TIMESTAMP_US)


def _outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return ("ok", fn(*args))
    except BadRequest as exc:
        return ("error", type(exc), str(exc))


def _dispatch(
    twin: ModuleType, table: object, topic: str, payload: bytes, now: int
) -> tuple[object, list[PointWrite], list[Rejection]]:
    """``dispatch`` with fresh row lists: (outcome, rows appended, rejections appended)."""
    points: list[PointWrite] = []
    rejected: list[Rejection] = []
    outcome = _outcome(twin.dispatch, table, topic, payload, now, points, rejected)
    return outcome, points, rejected


def check(data: bytes) -> None:
    if not data:
        return
    control, rest = data[0], data[1:]
    table_py, table_c = _TABLES[control % len(_TABLES)]
    now = _NOWS[(control >> 2) % len(_NOWS)]
    raw_topic, sep, payload = rest.partition(b"\x00")
    topic = raw_topic.decode("utf-8", "replace") if sep else "$resource.batch"
    if not sep:
        payload = rest
    result = _dispatch(pure, table_py, topic, payload, now)
    assert _dispatch(compiled, table_c, topic, payload, now) == result, "twins differ"
    outcome, points, rejected = result
    if outcome[0] == "error":  # type: ignore[index]
        assert not points, "a refused PUBLISH appended rows"
        assert not rejected, "a refused PUBLISH appended rejections"
    for point in points:
        assert 0 <= point.timestamp <= pure.MAX_TIMESTAMP_US, point
        assert point.alias, point
    if topic.startswith("$resource/") and outcome[0] == "ok":  # type: ignore[index]
        assert len(points) + len(rejected) == 1, (points, rejected)
        assert all(p.timestamp == now for p in points), points
    text = payload.decode("utf-8", "replace")
    for alias in _ALIASES:
        assert _outcome(pure.validate_value, table_py, alias, text) == _outcome(
            compiled.validate_value, table_c, alias, text
        ), f"validate_value differs for {alias!r}"
    numbers: list[object] = []
    if len(payload) >= 8:
        numbers.append(int.from_bytes(payload[:8], "big", signed=True))
        (as_float,) = struct.unpack(">d", payload[:8])
        if not math.isnan(as_float):
            numbers.append(as_float)
    for number in numbers:
        got = _outcome(pure.normalize_timestamp, number)
        assert _outcome(compiled.normalize_timestamp, number) == got, (
            f"timestamps differ: {number!r}"
        )


def seeds() -> list[bytes]:
    batch = b'[{"timestamp": 1700000000, "values": {"n": 1.5, "s": "on", "x": {"a": [1, 2]}}}]'
    return [
        b"\x01$resource/n\x0021.5",
        b"\x01$resource/s\x00maybe",
        b"\x02$resource/r\x0025",
        b"\x01" + batch,
        b"\x05" + batch + batch,
        b"\x00$provision/dev-1\x00",
        b"\x00custom/topic\x00\xff\xfe",
        b"\x01$resource/b\x00true",
        b"\x01$resource\x00x",
    ]
