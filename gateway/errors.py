"""The gateway's error tree.

Every error raised on purpose derives from :class:`GatewayError` and carries the wire codes
it maps to (h2's ``error_code``, h11's ``error_status_hint``): an MQTT reason and an HTTP
status.  Exactly one place per protocol turns an error into bytes
(``gateway/device/mqtt/connection.py`` for MQTT, the device app's error handling for HTTP);
everything else only raises.

The compiled codec and dispatcher raise these same classes, so the differential tests can
compare exception type and reason between the Cython module and its pure-Python twin.

Errors cross process boundaries (a store op refused in the store owner, docs/architecture.md
"Scale"): :func:`error_info` turns any :class:`GatewayError` into an :class:`ErrorInfo`
Struct (class name, message, code, HTTP status, reason, CONNACK code) that msgspec encodes,
and :func:`rebuild_error` turns it back into the same class with the same attributes.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from typing import ClassVar

import msgspec

__all__ = [
    "DISK_FULL_ERRNOS",
    "AlreadyExists",
    "BadRequest",
    "Conflict",
    "ConnAckCode",
    "ErrorInfo",
    "GatewayError",
    "HeadersTooLarge",
    "InvalidValue",
    "MalformedPacket",
    "MethodNotAllowed",
    "NotFound",
    "PacketTooLarge",
    "ProtocolViolation",
    "Refused",
    "RequestTimeout",
    "StorageFull",
    "StoreFailed",
    "TooLarge",
    "Unauthorized",
    "UnsupportedProtocol",
    "debug_reason",
    "error_info",
    "is_disk_full",
    "rebuild_error",
]

# The errnos of a write refused for want of space: the filesystem is full, or the user's
# quota on it is used up.  Both go away by themselves when space is freed.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ConnAckCode(IntEnum):
    """MQTT 3.1.1 CONNACK return codes (spec table 3.1)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose.

    ``code`` is the stable machine-readable string of the management API error shape
    ``{"error": code, "message": text}``; ``http_status`` the status the HTTP layers answer.
    """

    code: ClassVar[str] = "error"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolViolation(GatewayError):
    """The peer broke the MQTT spec. The session must end; ``reason`` says why."""

    code = "protocol_error"
    http_status = 400
    reason: ClassVar[str] = "protocol_error"


class MalformedPacket(ProtocolViolation):
    """Bytes that do not decode as the packet they claim to be."""

    reason = "malformed_packet"


class PacketTooLarge(ProtocolViolation):
    """A packet above the connector's maximum packet size, refused before it is buffered."""

    reason = "packet_too_large"


class UnsupportedProtocol(ProtocolViolation):
    """CONNECT with a protocol name or level other than MQTT 3.1.1 (or 3.1)."""

    reason = "unsupported_protocol_version"


class BadRequest(GatewayError):
    """The request is syntactically or semantically invalid; nothing was changed."""

    code = "bad_request"
    http_status = 400


class InvalidValue(BadRequest):
    """A value that violates a resource's format or allowed values, or an identity format."""

    code = "invalid_value"


class NotFound(GatewayError):
    code = "not_found"
    http_status = 404


class AlreadyExists(GatewayError):
    code = "already_exists"
    http_status = 409


class Conflict(GatewayError):
    code = "conflict"
    http_status = 409


class Unauthorized(GatewayError):
    code = "unauthorized"
    http_status = 401


class MethodNotAllowed(GatewayError):
    """The path exists but not for this method; ``allow`` lists the methods it has (the
    ``Allow`` header of the 405 answer)."""

    code = "method_not_allowed"
    http_status = 405

    def __init__(self, message: str, *, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class TooLarge(GatewayError):
    """A request body, value or upload above its limit; nothing was stored (the rest of a
    body is never buffered once the limit is passed)."""

    code = "too_large"
    http_status = 413


class HeadersTooLarge(GatewayError):
    """A request head above the HTTP header limit."""

    code = "headers_too_large"
    http_status = 431


class RequestTimeout(GatewayError):
    """A request head or body that did not arrive within its deadline; the connection is
    closed after the answer."""

    code = "request_timeout"
    http_status = 408


class StoreFailed(GatewayError):
    """The store could not apply a submission for a reason other than a refusal: the
    commit failed (disk full, I/O error) or an operation hit a bug.  Nothing of the
    submission was stored; the store logged the cause with its traceback."""

    code = "store_failed"
    http_status = 503


class StorageFull(StoreFailed):
    """The filesystem holding the data directory is full: the write was refused and nothing
    of it was stored.  Not a bug and not the writer's fault: the gateway keeps serving reads,
    and writes succeed again as soon as space is freed, without a restart (docs/decisions.md
    "Disk full").  HTTP answers ``507 Insufficient Storage`` (RFC 4918 §11.5); an MQTT
    connection gets no PUBACK for the writes of that read and ends with the debug reason
    ``disk_full``, so its client sends them again on its next connection."""

    code = "storage_full"
    http_status = 507
    reason: ClassVar[str] = "disk_full"


class Refused(GatewayError):
    """Policy said no (unknown connector, locked device, identity outside the format, IP not
    whitelisted).  Changes nothing.  ``reason`` is the debug-log vocabulary of docs/protocol.md
    §12 item 24; ``connack`` the MQTT 3.1.1 return code to answer with, if any."""

    code = "refused"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        http_status: int = 403,
        connack: ConnAckCode = ConnAckCode.NOT_AUTHORIZED,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.http_status = http_status
        self.connack = connack


class ErrorInfo(msgspec.Struct, frozen=True, gc=False):
    """A :class:`GatewayError` as plain data, to cross a process boundary."""

    cls: str  # the class name, one of this module's classes
    message: str
    code: str
    http_status: int
    reason: str | None = None  # Refused and ProtocolViolation
    connack: int | None = None  # Refused


_CLASSES: dict[str, type[GatewayError]] = {
    c.__name__: c
    for c in (
        GatewayError,
        ProtocolViolation,
        MalformedPacket,
        PacketTooLarge,
        UnsupportedProtocol,
        BadRequest,
        InvalidValue,
        NotFound,
        AlreadyExists,
        Conflict,
        Unauthorized,
        MethodNotAllowed,
        TooLarge,
        HeadersTooLarge,
        RequestTimeout,
        StoreFailed,
        StorageFull,
        Refused,
    )
}


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` is an ``OSError`` for want of space (``ENOSPC``, ``EDQUOT``)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def debug_reason(exc: GatewayError) -> str:
    """The reason a refusal's debug-log record carries: a :class:`Refused`'s own reason,
    ``disk_full`` for :class:`StorageFull`, else the error's code."""
    if isinstance(exc, Refused | StorageFull):
        return exc.reason
    return exc.code


def error_info(exc: GatewayError) -> ErrorInfo:
    """``exc`` as data.  A subclass defined outside this module travels as its nearest
    base class of this module (its message, code and status are kept)."""
    cls = next(c for c in type(exc).__mro__ if _CLASSES.get(c.__name__) is c)
    if isinstance(exc, Refused):
        return ErrorInfo(
            cls.__name__, exc.message, exc.code, exc.http_status, exc.reason, int(exc.connack)
        )
    reason = exc.reason if isinstance(exc, ProtocolViolation) else None
    return ErrorInfo(cls.__name__, exc.message, exc.code, exc.http_status, reason)


def rebuild_error(info: ErrorInfo) -> GatewayError:
    """The error :func:`error_info` described: same class (or its nearest base of this
    module), message, HTTP status, and for :class:`Refused` the reason and CONNACK code."""
    cls = _CLASSES.get(info.cls, GatewayError)
    if cls is Refused:
        return Refused(
            info.message,
            reason=info.reason or "refused",
            http_status=info.http_status,
            connack=ConnAckCode(info.connack or ConnAckCode.NOT_AUTHORIZED),
        )
    exc = cls(info.message)
    if exc.http_status != info.http_status:
        exc.http_status = info.http_status
    return exc
