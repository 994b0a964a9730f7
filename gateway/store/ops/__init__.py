"""The op handlers of both store backends, written once against the
:class:`~gateway.store.ops._tx.Tx` protocol (docs/decisions.md "One set of op handlers")."""
