"""Transition: the SQLite Tx lives in ``gateway/store/sqlite/tx.py``."""

from gateway.store.ops._tx import Delta
from gateway.store.sqlite.tx import SqliteTx as Tx

__all__ = ["Delta", "Tx"]
