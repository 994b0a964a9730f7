"""Transition: the PostgreSQL Tx lives in ``gateway/store/postgresql/tx.py``."""

from gateway.store.ops._tx import Delta
from gateway.store.postgresql.tx import Cursor
from gateway.store.postgresql.tx import PgTx as Tx

__all__ = ["Cursor", "Delta", "Tx"]
