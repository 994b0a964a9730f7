"""Identity-format validation (docs/protocol.md §5.1, §12 item 19): the pure-Python twin of
``ext/identity.pyx``.  Sans-IO; both twins expose the same ``__all__`` and raise the same
:class:`~gateway.errors.InvalidValue` messages, which ``tests/twins`` checks on random input.
"""

from __future__ import annotations

from gateway.errors import InvalidValue

__all__ = ["IDENTITY_TYPES", "MAX_IDENTITY_LENGTH", "validate_identity"]

MAX_IDENTITY_LENGTH = 128  # characters; identities appear in MQTT topics and URLs
IDENTITY_TYPES = ("opaque", "base10", "base16", "mac:48", "mac:48-nosep", "uuid:v4")

_HEX = frozenset("0123456789abcdefABCDEF")
_DEC = frozenset("0123456789")


def _is_hex(text: str) -> bool:
    return all(c in _HEX for c in text)


def validate_identity(identity: str, kind: str, prefix: str, casing: str, length: int) -> None:
    """Raise ``InvalidValue`` unless ``identity`` satisfies the connector's identity format.

    ``length`` (0 = any) counts the characters after ``prefix``; ``casing`` is ``mixed``,
    ``upper`` or ``lower`` and applies to letters only.  Every identity, whatever its type,
    is 1-128 printable ASCII characters without ``/ + #`` (they would break MQTT topics).
    """
    n = len(identity)
    if n == 0:
        raise InvalidValue("identity is empty")
    if n > MAX_IDENTITY_LENGTH:
        raise InvalidValue(f"identity longer than {MAX_IDENTITY_LENGTH} characters")
    for c in identity:
        o = ord(c)
        if o <= 32 or o >= 127 or c in "/+#":
            raise InvalidValue("identity has a character outside printable ASCII or one of / + #")
    if prefix and not identity.startswith(prefix):
        raise InvalidValue(f"identity does not start with the prefix {prefix!r}")
    body = identity[len(prefix) :]
    if length and len(body) != length:
        raise InvalidValue(f"identity must have {length} characters after the prefix")
    if casing == "upper":
        if any("a" <= c <= "z" for c in body):
            raise InvalidValue("identity must be upper case")
    elif casing == "lower":
        if any("A" <= c <= "Z" for c in body):
            raise InvalidValue("identity must be lower case")
    elif casing != "mixed":
        raise InvalidValue(f"unknown casing {casing!r}")
    if kind == "opaque":
        if not body:
            raise InvalidValue("identity has nothing after the prefix")
        return
    if kind == "base10":
        ok = bool(body) and all(c in _DEC for c in body)
    elif kind == "base16":
        ok = bool(body) and _is_hex(body)
    elif kind == "mac:48":
        ok = len(body) == 17 and all(
            (body[i] == ":") if i % 3 == 2 else (body[i] in _HEX) for i in range(17)
        )
    elif kind == "mac:48-nosep":
        ok = len(body) == 12 and _is_hex(body)
    elif kind == "uuid:v4":
        ok = (
            len(body) == 36
            and all(
                (body[i] == "-") if i in (8, 13, 18, 23) else (body[i] in _HEX) for i in range(36)
            )
            and body[14] == "4"
            and body[19] in "89abAB"
        )
    else:
        raise InvalidValue(f"unknown identity type {kind!r}")
    if not ok:
        raise InvalidValue(f"identity is not a valid {kind} value")
