"""The gateway's error tree.

Every error raised on purpose derives from :class:`GatewayError` and carries the wire codes
it maps to (h2's ``error_code``, h11's ``error_status_hint``): an MQTT reason and an HTTP
status.  Exactly one place per protocol turns an error into bytes
(``gateway/device/mqtt/connection.py`` for MQTT, the device app's error handling for HTTP);
everything else only raises.

The compiled codec and dispatcher raise these same classes, so the differential tests can
compare exception type and reason between the Cython module and its pure-Python twin.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "Conflict",
    "ConnAckCode",
    "GatewayError",
    "InvalidValue",
    "MalformedPacket",
    "NotFound",
    "PacketTooLarge",
    "ProtocolViolation",
    "Refused",
    "Unauthorized",
    "UnsupportedProtocol",
]


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
