"""docs/architecture.md principle 1: sans-IO modules import neither trio, sqlite3, hypercorn,
sockets nor time."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANS_IO = [
    *sorted((ROOT / "gateway" / "_pure").glob("*.py")),
    *sorted((ROOT / "ext").glob("*.pyx")),
    *sorted((ROOT / "gateway" / "rules").glob("*.py")),
    *sorted((ROOT / "gateway" / "mqtt").glob("*.py")),
]
FORBIDDEN = {"trio", "sqlite3", "hypercorn", "socket", "time", "asyncio", "ssl", "select"}


def _imports(path: Path) -> set[str]:
    text = path.read_text()
    if path.suffix == ".pyx":  # not Python syntax: take the module names of import lines
        return {m.group(1) for m in re.finditer(r"^(?:from|import)\s+([A-Za-z_]\w*)", text, re.M)}
    tree = ast.parse(text)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", [p for p in SANS_IO if p.exists()], ids=lambda p: p.name)
def test_no_io_imports(path: Path) -> None:
    bad = _imports(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
