# cython: language_level=3
"""Resource-write dispatch, sans-IO: the compiled twin of ``gateway/_pure/dispatch.py``.

Read the pure twin's docstring for the contract.  The value Structs (the store row
included) and the batch JSON decoder come from ``gateway/model.py``, as in the pure twin,
so both return objects of the same classes; this module compiles the per-PUBLISH work:
topic routing, alias checks, the number grammar, the format/allowed checks and the row
itself (appended to the caller's list: no intermediate result object per PUBLISH), with
C-level loops over the text.
"""

import math
import re

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

cdef Py_ssize_t _MAX_VALUE_BYTES = 1_048_576
cdef tuple _FORMATS = ("string", "number", "boolean")
cdef str _NUMBER = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER_RE = re.compile(_NUMBER)
_RANGE_RE = re.compile(f"({_NUMBER})-({_NUMBER})")
cdef str _BATCH_SHAPE = '{"timestamp": number, "values": {alias: value}}'
cdef str _TOO_DEEP = "$resource.batch payload is nested too deeply"
_json_encode = msgspec.json.encode


cdef str _encode_value(object raw):
    """A non-string batch value as compact JSON text (``BadRequest`` if too deep to encode)."""
    try:
        return _json_encode(raw).decode()
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None


cdef enum:
    FMT_STRING = 0
    FMT_NUMBER = 1
    FMT_BOOLEAN = 2


cdef inline bint _digit(Py_UCS4 c) noexcept:
    return c >= 48 and c <= 57  # '0'..'9'


cdef bint _is_number(str s):
    """The grammar ``-?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?``, by hand."""
    cdef Py_ssize_t n = len(s)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t digits = 0
    cdef Py_ssize_t exp_digits = 0
    cdef Py_UCS4 c
    if i < n and s[i] == 45:  # '-'
        i += 1
    while i < n and _digit(s[i]):
        i += 1
        digits += 1
    if i < n and s[i] == 46:  # '.'
        i += 1
        while i < n and _digit(s[i]):
            i += 1
            digits += 1
    if digits == 0:
        return False
    if i < n:
        c = s[i]
        if c != 101 and c != 69:  # 'e' 'E'
            return False
        i += 1
        if i < n and (s[i] == 43 or s[i] == 45):  # '+' '-'
            i += 1
        while i < n and _digit(s[i]):
            i += 1
            exp_digits += 1
        if exp_digits == 0:
            return False
    return i == n


cdef class _Rule:
    """The compiled form of one ResourceSpec: what ``validate_value`` checks, and whether
    a write also sets the ``set`` value (``settable``)."""

    cdef int fmt
    cdef bint has_allowed
    cdef object settable
    cdef frozenset exact
    cdef tuple ranges
    cdef frozenset texts

    def __init__(self, spec):
        cdef list exact = []
        cdef list ranges = []
        cdef list texts = []
        if spec.format not in _FORMATS:
            raise BadRequest(
                f"resource {spec.alias!r}: format {spec.format!r} is not one of {_FORMATS}"
            )
        self.fmt = _FORMATS.index(spec.format)
        self.settable = bool(spec.settable)
        self.has_allowed = len(spec.allowed) > 0
        for entry in spec.allowed:
            if self.fmt == FMT_NUMBER:
                _compile_number(spec.alias, entry, exact, ranges)
            elif self.fmt == FMT_BOOLEAN:
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
                texts.append(_json_encode(entry).decode())
        self.exact = frozenset(exact)
        self.ranges = tuple(ranges)
        self.texts = frozenset(texts)


cdef int _compile_number(str alias, entry, list exact, list ranges) except -1:
    cdef double value, lo, hi
    bad = BadRequest(
        f"resource {alias!r}: allowed value {entry!r} is neither a number nor a range 'lo-hi'"
    )
    if isinstance(entry, bool):
        raise bad
    if isinstance(entry, (int, float)):
        value = float(entry)
        if not math.isfinite(value):
            raise bad
        exact.append(value)
        return 0
    if not isinstance(entry, str):
        raise bad
    if _is_number(entry):
        value = float(entry)
        if not math.isfinite(value):
            raise bad
        exact.append(value)
        return 0
    match = _RANGE_RE.fullmatch(entry)
    if match is None:
        raise bad
    lo = float(match[1])
    hi = float(match[2])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise bad
    ranges.append((lo, hi))
    return 0


cdef class ResourceTable:
    """A connector's resource definitions, compiled once; immutable after construction.

    Raises ``BadRequest`` for a bad alias, a duplicate alias, an unknown format or an
    ``allowed`` entry that does not fit the format (numbers: a number or a ``"lo-hi"`` range).
    """

    cdef dict _specs
    cdef dict _rules

    def __init__(self, resources):
        cdef dict specs = {}
        cdef dict rules = {}
        for spec in resources:
            _check_alias(spec.alias)
            if spec.alias in specs:
                raise BadRequest(f"resource {spec.alias!r} is defined twice")
            specs[spec.alias] = spec
            rules[spec.alias] = _Rule(spec)
        self._specs = specs
        self._rules = rules

    def get(self, alias):
        """The definition of ``alias``, or None if it is not a defined resource."""
        return self._specs.get(alias)

    def __contains__(self, alias):
        return alias in self._specs

    def __len__(self):
        return len(self._specs)

    def __iter__(self):
        return iter(self._specs.values())


cdef int _check_alias(str alias) except -1:
    cdef Py_UCS4 c
    if len(alias) == 0:
        raise BadRequest("resource alias is empty")
    for c in alias:
        # '/' '.' '$' '+' '#'
        if c == 47 or c == 46 or c == 36 or c == 43 or c == 35:
            raise BadRequest(f"resource alias {alias!r} contains {str(c)!r}")
    return 0


cdef str _check_rule(_Rule rule, str value):
    cdef Py_ssize_t n = len(value)
    cdef double number
    cdef double lo, hi
    if n > _MAX_VALUE_BYTES or (
        4 * n > _MAX_VALUE_BYTES and len(value.encode("utf-8")) > _MAX_VALUE_BYTES
    ):
        return f"value is longer than {_MAX_VALUE_BYTES} bytes"
    if rule.fmt == FMT_NUMBER:
        if not _is_number(value):
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
    if rule.fmt == FMT_BOOLEAN and value != "true" and value != "false":
        return "value is not true or false"
    if rule.has_allowed and value not in rule.texts:
        return "value is not one of the allowed values"
    return None


def validate_value(ResourceTable table, str alias, str value):
    """None if ``value`` may be stored for ``alias``, else the reason it may not."""
    rule = table._rules.get(alias)
    if rule is None:
        return None
    return _check_rule(<_Rule>rule, value)


def normalize_timestamp(number):
    """Microseconds from a device timestamp in s, ms or µs, chosen by magnitude."""
    if isinstance(number, bool) or not isinstance(number, (int, float)):
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


cdef str _decode_text(str alias, bytes payload):
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"value of {alias!r} is not valid UTF-8") from None


cdef int _write(
    dict rules,
    str alias,
    str value,
    object timestamp,
    object replay,
    list points,
    list rejected,
) except -1:
    cdef _Rule rule
    found = rules.get(alias)
    if found is None:
        points.append(PointWrite(alias, value, timestamp, False, False, replay))
        return 0
    rule = <_Rule>found
    reason = _check_rule(rule, value)
    if reason is None:
        points.append(PointWrite(alias, value, timestamp, True, rule.settable, replay))
    else:
        rejected.append(Rejection(alias, value, timestamp, reason))
    return 0


cdef int _dispatch_batch(
    ResourceTable table, bytes payload, list points, list rejected
) except -1:
    # built apart and appended at the end: a bad entry leaves the caller's lists as they were
    cdef list rows = []
    cdef list refused = []
    cdef set seen = None
    cdef dict rules = table._rules
    cdef dict values
    cdef str alias
    cdef str value
    try:
        entries = BATCH_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise BadRequest(
            f"$resource.batch payload is not a JSON array of {_BATCH_SHAPE} objects: {exc}"
        ) from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    if len(entries) > 1:
        seen = set()
    for entry in entries:
        timestamp = normalize_timestamp(entry.timestamp)
        values = entry.values
        for alias, raw in values.items():
            _check_alias(alias)
            value = raw if type(raw) is str else _encode_value(raw)
            if seen is not None:
                key = (alias, timestamp, value)
                if key in seen:
                    continue  # an exact duplicate within one batch (docs/protocol.md §12 item 14)
                seen.add(key)
            _write(rules, alias, value, timestamp, True, rows, refused)
    points.extend(rows)
    rejected.extend(refused)
    return 0


def dispatch(
    ResourceTable table,
    str topic,
    bytes payload,
    now_us,
    list points not None,
    list rejected not None,
):
    """What a device PUBLISH asks for; see the pure twin.  ``None``: a resource write whose
    rows were appended to ``points`` (failing values to ``rejected``).  Raises
    ``BadRequest`` (and then appends nothing)."""
    cdef str alias
    if len(topic) and topic[0] == "$":
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
            if len(identity) == 0:
                raise BadRequest("$provision/ topic without an identity")
            return ProvisionRequest(identity, payload)
        if topic == "$resource" or topic == "$provision":
            raise BadRequest(f"{topic} topic without a /<name> level")
    return CustomPublish(topic, payload)
