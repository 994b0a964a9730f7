"""Choose between the compiled hot path and its pure-Python twins, explicitly.

``GATEWAY_PURE_PYTHON=1`` selects the twins under ``gateway/_pure``; otherwise the Cython
modules under ``gateway/_ext`` must be importable.  There is no silent fallback: a missing
build raises ``ImportError`` with the command that fixes it, because a quiet switch to the
slow path costs throughput with no error anywhere (yarl's ``test_quoting_c_loaded``).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["PURE_PYTHON", "implementation", "load"]

PURE_PYTHON = os.environ.get("GATEWAY_PURE_PYTHON", "") not in ("", "0")


def implementation() -> str:
    """``"compiled"`` or ``"pure"``: what ``gateway --version`` and the health route report."""
    return "pure" if PURE_PYTHON else "compiled"


def load(stem: str) -> ModuleType:
    """Import the selected twin of ``stem`` (``identity``, ``mqtt_codec``, ``dispatch``...)."""
    if PURE_PYTHON:
        return importlib.import_module(f"gateway._pure.{stem}")
    try:
        return importlib.import_module(f"gateway._ext.{stem}")
    except ImportError as exc:
        raise ImportError(
            f"the compiled module gateway._ext.{stem} is not built: run scripts/build-ext "
            "(or set GATEWAY_PURE_PYTHON=1 to run the pure-Python twins on purpose)"
        ) from exc
