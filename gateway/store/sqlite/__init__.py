"""The embedded SQLite store: ``writer.py`` (group commit), ``ops/`` (one handler per op),
``reader.py`` (typed queries), ``migrations.py`` (the explicit schema steps), ``store.py``
(both halves behind :class:`gateway.store.api.Store`)."""

from __future__ import annotations

from gateway.store.sqlite.reader import SqliteReader
from gateway.store.sqlite.store import SqliteReads, SqliteStore, integrity_check, open_store

__all__ = ["SqliteReader", "SqliteReads", "SqliteStore", "integrity_check", "open_store"]
