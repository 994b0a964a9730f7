"""docs/architecture.md principle 1: sans-IO modules import neither trio, sqlite3, hypercorn,
sockets, time, asyncio, ssl nor select — not even through another module of ours.

The Python modules are checked by the import-linter contracts in pyproject.toml (the
``sans-io`` forbidden contract follows indirect imports); import-linter cannot read Cython,
so the ``ext/*.pyx`` sources are checked here: their own imports, and everything the
first-party modules they import pull in.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"trio", "sqlite3", "hypercorn", "socket", "time", "asyncio", "ssl", "select"}
PYX = sorted((ROOT / "ext").glob("*.pyx"))


def test_import_linter_contracts_hold() -> None:
    """The layers and sans-IO contracts (what ``scripts/check`` runs)."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run(
        [str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("gateway", include_external_packages=True, cache_dir=None)


def _pyx_imports(path: Path) -> set[str]:
    text = path.read_text()
    return {m.group(1) for m in re.finditer(r"^(?:from|import)\s+([A-Za-z_][\w.]*)", text, re.M)}


@pytest.mark.parametrize("path", PYX, ids=lambda p: p.name)
def test_cython_sources_import_no_io(path: Path, graph: grimp.ImportGraph) -> None:
    direct = _pyx_imports(path)
    reached = {m.split(".")[0] for m in direct}
    for module in direct:
        if module.startswith("gateway.") and module in graph.modules:
            reached |= {m.split(".")[0] for m in graph.find_upstream_modules(module)}
    bad = reached & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (directly or through ours)"


def test_the_cython_check_can_fail(graph: grimp.ImportGraph) -> None:
    """gateway.clock reads the clock: a .pyx importing it would be caught."""
    upstream = {m.split(".")[0] for m in graph.find_upstream_modules("gateway.clock")}
    assert "time" in upstream
