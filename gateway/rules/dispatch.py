"""Selector for the resource-write dispatcher twin (see :mod:`gateway._impl`).

``gateway._ext.dispatch`` (Cython) by default, ``gateway._pure.dispatch`` when
``GATEWAY_PURE_PYTHON=1``.  The value Structs (:class:`ResourceSpec`, :class:`Rejection`,
:class:`ProvisionRequest`, :class:`CustomPublish`, and the store row
:class:`~gateway.model.PointWrite`) are the same classes under either twin;
:class:`ResourceTable` is the selected twin's own, and ``dispatch``/``validate_value`` need
a table of their twin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway._impl import load

# The value Structs have one definition, in gateway/model.py; both twins return them.
from gateway.model import (
    CustomPublish,
    PointWrite,
    ProvisionRequest,
    Rejection,
    ResourceSpec,
)

if TYPE_CHECKING:
    # mypy sees the typed twin as real classes and functions (usable in annotations).
    from gateway._pure.dispatch import (
        MAX_TIMESTAMP_US,
        MAX_VALUE_BYTES,
        ResourceTable,
        dispatch,
        normalize_timestamp,
        validate_value,
    )
else:
    _twin = load("dispatch")
    MAX_TIMESTAMP_US = _twin.MAX_TIMESTAMP_US
    MAX_VALUE_BYTES = _twin.MAX_VALUE_BYTES
    ResourceTable = _twin.ResourceTable
    dispatch = _twin.dispatch
    normalize_timestamp = _twin.normalize_timestamp
    validate_value = _twin.validate_value

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
