"""Fuzz target: the resource-write dispatcher, compiled and pure twins side by side.

Input: one control byte (which of three resource tables, which server time), then a topic,
a NUL byte and the payload (no NUL: the whole rest is a ``$resource.batch`` payload).

Invariants:

* both twins return equal results or raise the same class with the same message, for
  :func:`dispatch`, :func:`validate_value` of the payload text on every alias, and
  :func:`normalize_timestamp` of numbers read from the payload;
* the only exception is :class:`~gateway.errors.BadRequest`;
* a ``$resource/<alias>`` write gives exactly one point or one rejection at the server
  time, and every point's timestamp is within ``0..MAX_TIMESTAMP_US``.
"""

from __future__ import annotations

import importlib
import math
import struct
from collections.abc import Callable
from types import ModuleType

from gateway._pure import dispatch as pure
from gateway.errors import BadRequest

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
    result = _outcome(pure.dispatch, table_py, topic, payload, now)
    assert _outcome(compiled.dispatch, table_c, topic, payload, now) == result, "twins differ"
    if result[0] == "ok":  # type: ignore[index]
        value = result[1]  # type: ignore[index]
        if isinstance(value, pure.ResourceWrites):
            for point in value.points:
                assert 0 <= point.timestamp <= pure.MAX_TIMESTAMP_US, point
                assert point.alias, point
            if topic.startswith("$resource/"):
                assert len(value.points) + len(value.rejected) == 1, value
                assert all(p.timestamp == now for p in value.points), value
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
