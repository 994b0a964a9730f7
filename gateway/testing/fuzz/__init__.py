"""Coverage-guided fuzz targets (atheris) with their invariants, replayable without atheris.

Every target module has the same three names:

* ``NAME`` — the target's name (its corpus is ``fuzz/corpus/<NAME>/``, the inputs that
  once broke it ``fuzz/crashes/<NAME>/``);
* ``seeds()`` — a few inputs to start a corpus from;
* ``check(data)`` — run one input through the code under test and assert the target's
  invariants; an ``AssertionError`` (an invariant broke) or any exception other than the
  documented :class:`~gateway.errors.GatewayError` subclasses is a finding.

Some targets need a running component (the CSV import needs a store): those also have
``prepared()``, a context manager around every ``check`` call.

``python -m gateway.testing.fuzz.runner`` drives one target under atheris (``scripts/fuzz``
runs them all and keeps the corpus minimised); ``tests/fuzz`` replays every corpus and
crash file through ``check`` on every test run, so each crash found becomes a test.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["TARGETS", "load"]

TARGETS = (
    "mqtt_codec",
    "dispatch",
    "http_device",
    "http_assembler",
    "csv_import",
    "openapi",
    "proxy_header",
)


def load(name: str) -> ModuleType:
    """The target module called ``name`` (one of :data:`TARGETS`)."""
    if name not in TARGETS:
        raise ValueError(f"unknown fuzz target {name!r} (one of {', '.join(TARGETS)})")
    return importlib.import_module(f"gateway.testing.fuzz.{name}")
