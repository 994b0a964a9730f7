"""Selector for the identity-format validator twin (see :mod:`gateway._impl`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway._impl import load

if TYPE_CHECKING:
    from gateway._pure import identity as _twin
else:
    _twin = load("identity")

__all__ = ["IDENTITY_TYPES", "MAX_IDENTITY_LENGTH", "validate_identity"]

IDENTITY_TYPES = _twin.IDENTITY_TYPES
MAX_IDENTITY_LENGTH = _twin.MAX_IDENTITY_LENGTH
validate_identity = _twin.validate_identity
