"""Selector for the MQTT codec twin (see :mod:`gateway._impl`).

``gateway._ext.mqtt_codec`` (Cython) by default, ``gateway._pure.mqtt_codec`` when
``GATEWAY_PURE_PYTHON=1``.  Both decode into the Structs of :mod:`gateway.mqtt.packets` and
raise the :class:`~gateway.errors.ProtocolViolation` subclasses with identical messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway._impl import load
from gateway.mqtt.packets import NEED_DATA

if TYPE_CHECKING:
    # mypy sees the typed twin as real classes and functions (usable in annotations).
    from gateway._pure.mqtt_codec import (
        DEFAULT_MAX_PACKET_SIZE,
        MAX_REMAINING_LENGTH,
        Decoder,
        encode_connack,
        encode_pingresp,
        encode_puback,
        encode_pubacks,
        encode_pubcomp,
        encode_publish,
        encode_pubrec,
        encode_pubrel,
        encode_suback,
        encode_unsuback,
        packet_size,
    )
else:
    _twin = load("mqtt_codec")
    DEFAULT_MAX_PACKET_SIZE = _twin.DEFAULT_MAX_PACKET_SIZE
    MAX_REMAINING_LENGTH = _twin.MAX_REMAINING_LENGTH
    Decoder = _twin.Decoder
    encode_connack = _twin.encode_connack
    encode_pingresp = _twin.encode_pingresp
    encode_puback = _twin.encode_puback
    encode_pubacks = _twin.encode_pubacks
    encode_pubcomp = _twin.encode_pubcomp
    encode_publish = _twin.encode_publish
    encode_pubrec = _twin.encode_pubrec
    encode_pubrel = _twin.encode_pubrel
    encode_suback = _twin.encode_suback
    encode_unsuback = _twin.encode_unsuback
    packet_size = _twin.packet_size

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "NEED_DATA",
    "Decoder",
    "encode_connack",
    "encode_pingresp",
    "encode_puback",
    "encode_pubacks",
    "encode_pubcomp",
    "encode_publish",
    "encode_pubrec",
    "encode_pubrel",
    "encode_suback",
    "encode_unsuback",
    "packet_size",
]
