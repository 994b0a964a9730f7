"""The op handlers of both store backends: one function per op type of
:data:`gateway.store.api.Op`, written once against the :class:`~gateway.store.ops._tx.Tx`
protocol (its docstring says how one SQL text serves SQLite and PostgreSQL), and
:func:`apply_ops`, which runs one submission's ops in order inside its transaction.

Every SQL statement of the op handlers is in this package; each backend's ``tx.py`` holds
its Tx and the writer's retention.  A handler raises a :mod:`gateway.errors` class to
refuse; the writer then rolls the submission back alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.store.api import Op, OpResult
from gateway.store.ops import catalog, data, devices, integrations
from gateway.store.ops._tx import Delta, Tx, TxBase
from gateway.store.ops_table import Handler, handlers_of, run_ops

__all__ = ["HANDLERS", "Delta", "Tx", "TxBase", "apply_ops", "seed_counts"]

seed_counts = data.seed_counts

HANDLERS: Mapping[type, Handler] = handlers_of(catalog, data, devices, integrations)


def apply_ops(tx: Tx, ops: Sequence[Op]) -> list[OpResult]:
    """Apply one submission's ops in order (see :func:`gateway.store.ops_table.run_ops`)."""
    return run_ops(HANDLERS, data.data_in, tx, ops)
