"""The multi-process node (docs/architecture.md "The node"): ``supervisor.py`` (the
``gateway serve`` process: lock, sockets, children), ``owner.py`` (the store owner: SQLite
writer, management API, integrations, the bus hub), ``worker.py`` (device connections over
a remote store)."""
