"""Resource-write dispatch, sans-IO: the pure-Python twin of ``ext/dispatch.pyx``.

Turns one device PUBLISH (connector resource table, topic, payload, server time) into what
it asks for (docs/protocol.md §3.2, §3.3, §4):

* ``$provision/<identity>`` → :class:`ProvisionRequest`;
* ``$resource/<alias>`` → one store row (:class:`~gateway.model.PointWrite`) at ``now_us``;
* ``$resource.batch`` → a row per (entry, alias), each with ``replay_check`` set;
* any other topic → :class:`CustomPublish` (event log only).

Resource writes return ``None`` and *append* their rows to the caller's ``points`` list:
the MQTT connection passes one list for every PUBLISH of a read, and that list goes to the
store inside one ``DataIn`` as it is (docs/architecture.md principle 5: the row is built
once, here, with its ``settable`` and ``replay_check`` flags; nothing re-wraps or
re-classifies it later).

Values travel as text.  Values of defined aliases are checked against the resource's
``format`` and ``allowed`` list; a failing value becomes a :class:`Rejection` appended to
the caller's ``rejected`` list rather than a row (the MQTT session still PUBACKs,
docs/protocol.md §12 item 13).  Unusable input (a bad alias, a batch that is not the
documented JSON shape, text that is not UTF-8) raises :class:`~gateway.errors.BadRequest`
with a message that says why, and appends nothing.

The value Structs (the row included) and the batch decoder are defined once, in
:mod:`gateway.model`, and imported by both twins, so both return objects of the very same
classes; ``tests/twins`` checks that the twins agree on random topics, payloads and tables.
:func:`validate_value` and :func:`normalize_timestamp` are shared with the HTTP device API
and the management API.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from gateway.errors import BadRequest
from gateway.model import (
    BATCH_DECODER,
    CustomPublish,
    PointWrite,
    ProvisionRequest,
    Rejection,
    ResourceSpec,
)

__all__ = [
    "MAX_TIMESTAMP_US",
    "MAX_VALUE_BYTES",
    "CustomPublish",
    "PointWrite",
    "ProvisionRequest",
    "Rejection",
    "ResourceSpec",
    "ResourceTable",
    "dispatch",
    "normalize_timestamp",
    "validate_value",
]

MAX_VALUE_BYTES = 1_048_576  # one resource value, UTF-8 bytes (docs/protocol.md §3.1)
MAX_TIMESTAMP_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
_FORMATS = ("string", "number", "boolean")
# A number as devices write it: JSON-style or plain decimal (``98.7``, ``-3``, ``1e3``, ``.5``).
_NUMBER = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER_RE = re.compile(_NUMBER)
_RANGE_RE = re.compile(f"({_NUMBER})-({_NUMBER})")
_BAD_ALIAS_CHARS = "/.$+#"
_BATCH_SHAPE = '{"timestamp": number, "values": {alias: value}}'
_TOO_DEEP = "$resource.batch payload is nested too deeply"
_FORMAT_CODE = {"string": 0, "number": 1, "boolean": 2}


class _Rule:
    """The compiled form of one ResourceSpec: what ``validate_value`` checks, and whether
    a write also sets the ``set`` value (``settable``)."""

    __slots__ = ("exact", "fmt", "has_allowed", "ranges", "settable", "texts")

    def __init__(self, spec: ResourceSpec) -> None:
        if spec.format not in _FORMAT_CODE:
            raise BadRequest(
                f"resource {spec.alias!r}: format {spec.format!r} is not one of {_FORMATS}"
            )
        self.fmt = _FORMAT_CODE[spec.format]
        self.settable = spec.settable
        self.has_allowed = bool(spec.allowed)
        self.exact: frozenset[float] = frozenset()
        self.ranges: tuple[tuple[float, float], ...] = ()
        self.texts: frozenset[str] = frozenset()
        exact: list[float] = []
        ranges: list[tuple[float, float]] = []
        texts: list[str] = []
        for entry in spec.allowed:
            if self.fmt == 1:
                _compile_number(spec.alias, entry, exact, ranges)
            elif self.fmt == 2:
                if entry is True or entry == "true":
                    texts.append("true")
                elif entry is False or entry == "false":
                    texts.append("false")
                else:
                    raise BadRequest(
                        f"resource {spec.alias!r}: allowed value {entry!r} is not a boolean"
                    )
            elif isinstance(entry, str):
                texts.append(entry)
            else:
                texts.append(msgspec.json.encode(entry).decode())
        self.exact = frozenset(exact)
        self.ranges = tuple(ranges)
        self.texts = frozenset(texts)


def _compile_number(
    alias: str, entry: object, exact: list[float], ranges: list[tuple[float, float]]
) -> None:
    bad = BadRequest(
        f"resource {alias!r}: allowed value {entry!r} is neither a number nor a range 'lo-hi'"
    )
    if isinstance(entry, bool):
        raise bad
    if isinstance(entry, int | float):
        value = float(entry)
        if not math.isfinite(value):
            raise bad
        exact.append(value)
        return
    if not isinstance(entry, str):
        raise bad
    if _NUMBER_RE.fullmatch(entry):
        value = float(entry)
        if not math.isfinite(value):
            raise bad
        exact.append(value)
        return
    match = _RANGE_RE.fullmatch(entry)
    if match is None:
        raise bad
    lo, hi = float(match[1]), float(match[2])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise bad
    ranges.append((lo, hi))


class ResourceTable:
    """A connector's resource definitions, compiled once; immutable after construction.

    Raises ``BadRequest`` for a bad alias, a duplicate alias, an unknown format or an
    ``allowed`` entry that does not fit the format (numbers: a number or a ``"lo-hi"`` range).
    """

    __slots__ = ("_rules", "_specs")

    def __init__(self, resources: Iterable[ResourceSpec]) -> None:
        specs: dict[str, ResourceSpec] = {}
        rules: dict[str, _Rule] = {}
        for spec in resources:
            _check_alias(spec.alias)
            if spec.alias in specs:
                raise BadRequest(f"resource {spec.alias!r} is defined twice")
            specs[spec.alias] = spec
            rules[spec.alias] = _Rule(spec)
        self._specs = specs
        self._rules = rules

    def get(self, alias: str) -> ResourceSpec | None:
        """The definition of ``alias``, or None if it is not a defined resource."""
        return self._specs.get(alias)

    def __contains__(self, alias: object) -> bool:
        return alias in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> Iterator[ResourceSpec]:
        return iter(self._specs.values())


def _check_alias(alias: str) -> None:
    if not alias:
        raise BadRequest("resource alias is empty")
    for c in alias:
        if c in _BAD_ALIAS_CHARS:
            raise BadRequest(f"resource alias {alias!r} contains {c!r}")


def _check_rule(rule: _Rule, value: str) -> str | None:
    n = len(value)
    if n > MAX_VALUE_BYTES or (
        4 * n > MAX_VALUE_BYTES and len(value.encode("utf-8")) > MAX_VALUE_BYTES
    ):
        return f"value is longer than {MAX_VALUE_BYTES} bytes"
    if rule.fmt == 1:
        if _NUMBER_RE.fullmatch(value) is None:
            return "value is not a number"
        number = float(value)
        if not math.isfinite(number):
            return "value is not a finite number"
        if rule.has_allowed and number not in rule.exact:
            for lo, hi in rule.ranges:
                if lo <= number <= hi:
                    return None
            return "value is not one of the allowed values"
        return None
    if rule.fmt == 2 and value != "true" and value != "false":
        return "value is not true or false"
    if rule.has_allowed and value not in rule.texts:
        return "value is not one of the allowed values"
    return None


def validate_value(table: ResourceTable, alias: str, value: str) -> str | None:
    """None if ``value`` may be stored for ``alias``, else the reason it may not.

    An alias without a definition has no constraints (None).  Every value is limited to
    ``MAX_VALUE_BYTES`` UTF-8 bytes; ``number`` must be a finite decimal number, ``boolean``
    exactly ``true`` or ``false``; a non-empty ``allowed`` list must contain the value
    (numbers compare numerically, ranges ``"lo-hi"`` inclusive, other formats exactly).
    """
    rule = table._rules.get(alias)
    if rule is None:
        return None
    return _check_rule(rule, value)


def normalize_timestamp(number: int | float) -> int:
    """Microseconds from a device timestamp in s, ms or µs, chosen by magnitude
    (< 1e11 seconds, < 1e14 milliseconds, else microseconds; docs/protocol.md §3.3).

    Raises ``BadRequest`` for a non-number, a non-finite or negative value, or one after
    ``MAX_TIMESTAMP_US``.
    """
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise BadRequest(f"timestamp {number!r} is not a number")
    if isinstance(number, float) and not math.isfinite(number):
        raise BadRequest(f"timestamp {number!r} is not finite")
    if number < 0:
        raise BadRequest(f"timestamp {number!r} is negative")
    if number < 1e11:
        scaled = number * 1_000_000
    elif number < 1e14:
        scaled = number * 1_000
    else:
        scaled = number
    micros = round(scaled)
    if micros > MAX_TIMESTAMP_US:
        raise BadRequest(f"timestamp {number!r} is after the year 9999")
    return micros


def _decode_text(alias: str, payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"value of {alias!r} is not valid UTF-8") from None


def _write(
    rules: dict[str, _Rule],
    alias: str,
    value: str,
    timestamp: int,
    replay: bool,
    points: list[PointWrite],
    rejected: list[Rejection],
) -> None:
    rule = rules.get(alias)
    if rule is None:
        points.append(PointWrite(alias, value, timestamp, False, False, replay))
        return
    reason = _check_rule(rule, value)
    if reason is None:
        points.append(PointWrite(alias, value, timestamp, True, rule.settable, replay))
    else:
        rejected.append(Rejection(alias, value, timestamp, reason))


def _encode_value(raw: Any) -> str:
    """A non-string batch value as compact JSON text (``BadRequest`` if too deep to encode)."""
    try:
        return msgspec.json.encode(raw).decode()
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None


def _dispatch_batch(
    table: ResourceTable, payload: bytes, points: list[PointWrite], rejected: list[Rejection]
) -> None:
    try:
        entries = BATCH_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise BadRequest(
            f"$resource.batch payload is not a JSON array of {_BATCH_SHAPE} objects: {exc}"
        ) from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    rules = table._rules
    # built apart and appended at the end: a bad entry must leave the caller's lists as
    # they were (the whole PUBLISH is refused)
    rows: list[PointWrite] = []
    refused: list[Rejection] = []
    seen: set[tuple[str, int, str]] | None = set() if len(entries) > 1 else None
    for entry in entries:
        timestamp = normalize_timestamp(entry.timestamp)
        for alias, raw in entry.values.items():
            _check_alias(alias)
            value = raw if type(raw) is str else _encode_value(raw)
            if seen is not None:
                key = (alias, timestamp, value)
                if key in seen:
                    continue  # an exact duplicate within one batch (docs/protocol.md §12 item 14)
                seen.add(key)
            _write(rules, alias, value, timestamp, True, rows, refused)
    points += rows
    rejected += refused


def dispatch(
    table: ResourceTable,
    topic: str,
    payload: bytes,
    now_us: int,
    points: list[PointWrite],
    rejected: list[Rejection],
) -> ProvisionRequest | CustomPublish | None:
    """What a device PUBLISH asks for; see the module docstring.

    ``None`` means a resource write: its rows were appended to ``points`` and its failing
    values to ``rejected``.  ``now_us`` is the server time of a ``$resource/<alias>`` write
    (the caller reads the clock, not this function).  Raises ``BadRequest`` (and then
    appends nothing).
    """
    if topic.startswith("$"):
        if topic.startswith("$resource/"):
            alias = topic[10:]
            _check_alias(alias)
            value = _decode_text(alias, payload)
            _write(table._rules, alias, value, now_us, False, points, rejected)
            return None
        if topic == "$resource.batch":
            _dispatch_batch(table, payload, points, rejected)
            return None
        if topic.startswith("$provision/"):
            identity = topic[11:]
            if not identity:
                raise BadRequest("$provision/ topic without an identity")
            return ProvisionRequest(identity, payload)
        if topic == "$resource" or topic == "$provision":
            raise BadRequest(f"{topic} topic without a /<name> level")
    return CustomPublish(topic, payload)
