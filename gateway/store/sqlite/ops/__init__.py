"""The SQLite op handlers: one function per op type of :data:`gateway.store.api.Op`, and
:func:`apply_ops`, which runs one submission's ops in order inside its savepoint.

Every SQL statement of the write side is in this package.  A handler raises a
:mod:`gateway.errors` class to refuse; the writer then rolls the submission back alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.store.api import Op, OpResult
from gateway.store.ops import catalog, devices, integrations
from gateway.store.ops_table import Handler, handlers_of, run_ops
from gateway.store.sqlite.ops import data
from gateway.store.sqlite.ops._tx import Delta, Tx

__all__ = ["HANDLERS", "Delta", "Tx", "apply_ops", "seed_counts", "trim_events"]

seed_counts = data.seed_counts
trim_events = data.trim_events

HANDLERS: Mapping[type, Handler] = handlers_of(catalog, data, devices, integrations)


def apply_ops(tx: Tx, ops: Sequence[Op]) -> list[OpResult]:
    """Apply one submission's ops in order (see :func:`gateway.store.ops_table.run_ops`)."""
    return run_ops(HANDLERS, data.data_in, tx, ops)
