"""The PostgreSQL store (``gateway serve --store postgresql://…``): ``writer.py`` (one
writer thread per node, group commit, per-connector sequence rows), ``ops/`` (one handler
per op), ``reader.py`` (typed queries on a connection pool), ``migrations.py`` (its own
explicit schema steps), ``store.py`` (both halves behind :class:`gateway.store.api.Store`).
docs/decisions.md "PostgreSQL" says why it is built this way."""

from __future__ import annotations

from gateway.store.postgresql.reader import PgReader
from gateway.store.postgresql.store import PgReads, PgStore, open_store

__all__ = ["PgReader", "PgReads", "PgStore", "open_store"]
