# cython: language_level=3
"""Identity-format validation, compiled twin of ``gateway/_pure/identity.py``.

Runs on every provisioning request and every certificate CN; it walks the identity's code
points once with C comparisons instead of building Python sets and generators.
"""

from gateway.errors import InvalidValue

__all__ = ["IDENTITY_TYPES", "MAX_IDENTITY_LENGTH", "validate_identity"]

MAX_IDENTITY_LENGTH = 128
IDENTITY_TYPES = ("opaque", "base10", "base16", "mac:48", "mac:48-nosep", "uuid:v4")


cdef inline bint _hex(Py_UCS4 c) noexcept:
    return (c >= 48 and c <= 57) or (c >= 97 and c <= 102) or (c >= 65 and c <= 70)


cdef inline bint _dec(Py_UCS4 c) noexcept:
    return c >= 48 and c <= 57


cdef bint _all_hex(str s, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t i
    for i in range(start, end):
        if not _hex(s[i]):
            return False
    return True


def validate_identity(str identity, str kind, str prefix, str casing, Py_ssize_t length):
    cdef Py_ssize_t n = len(identity)
    cdef Py_ssize_t p = len(prefix)
    cdef Py_ssize_t i, m
    cdef Py_UCS4 c
    cdef bint ok
    if n == 0:
        raise InvalidValue("identity is empty")
    if n > MAX_IDENTITY_LENGTH:
        raise InvalidValue(f"identity longer than {MAX_IDENTITY_LENGTH} characters")
    for i in range(n):
        c = identity[i]
        if c <= 32 or c >= 127 or c == 47 or c == 43 or c == 35:
            raise InvalidValue("identity has a character outside printable ASCII or one of / + #")
    if p and not identity.startswith(prefix):
        raise InvalidValue(f"identity does not start with the prefix {prefix!r}")
    m = n - p
    if length and m != length:
        raise InvalidValue(f"identity must have {length} characters after the prefix")
    if casing == "upper":
        for i in range(p, n):
            c = identity[i]
            if c >= 97 and c <= 122:
                raise InvalidValue("identity must be upper case")
    elif casing == "lower":
        for i in range(p, n):
            c = identity[i]
            if c >= 65 and c <= 90:
                raise InvalidValue("identity must be lower case")
    elif casing != "mixed":
        raise InvalidValue(f"unknown casing {casing!r}")
    if kind == "opaque":
        if m == 0:
            raise InvalidValue("identity has nothing after the prefix")
        return None
    if kind == "base10":
        ok = m > 0
        for i in range(p, n):
            if not _dec(identity[i]):
                ok = False
                break
    elif kind == "base16":
        ok = m > 0 and _all_hex(identity, p, n)
    elif kind == "mac:48":
        ok = m == 17
        if ok:
            for i in range(17):
                c = identity[p + i]
                if (c != 58) if i % 3 == 2 else (not _hex(c)):
                    ok = False
                    break
    elif kind == "mac:48-nosep":
        ok = m == 12 and _all_hex(identity, p, n)
    elif kind == "uuid:v4":
        ok = m == 36
        if ok:
            for i in range(36):
                c = identity[p + i]
                if i == 8 or i == 13 or i == 18 or i == 23:
                    if c != 45:
                        ok = False
                        break
                elif not _hex(c):
                    ok = False
                    break
        if ok:
            c = identity[p + 19]
            ok = identity[p + 14] == "4" and (
                c == 56 or c == 57 or c == 97 or c == 98 or c == 65 or c == 66
            )
    else:
        raise InvalidValue(f"unknown identity type {kind!r}")
    if not ok:
        raise InvalidValue(f"identity is not a valid {kind} value")
    return None
