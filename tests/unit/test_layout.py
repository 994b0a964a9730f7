"""The store seam holds (docs/architecture.md "Layers"): no ``sqlite3`` import and no SQL
outside ``gateway/store/``, and no import cycles between the gateway's modules (imports
under ``TYPE_CHECKING`` count: a cycle hidden from the interpreter is still a cycle)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
STORE = GATEWAY / "store"
OUTSIDE = sorted(p for p in GATEWAY.rglob("*.py") if STORE not in p.parents)
DRIVERS = {"sqlite3", "sqlite_utils", "apsw", "psycopg", "psycopg2", "asyncpg"}
# SQL as this code base writes it: upper-case keywords followed by what makes them SQL.
SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b|\bCREATE\s+(?:TABLE|INDEX|UNIQUE|VIEW|TRIGGER)\b|\bDROP\s+TABLE\b"
    r"|\bALTER\s+TABLE\b|\bPRAGMA\s+\w+|\bBEGIN\s+(?:IMMEDIATE|EXCLUSIVE)\b|\bSAVEPOINT\s+\w+"
)


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):  # an f-string: its literal parts together
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            out.append((node.lineno, " ? ".join(str(p) for p in parts)))
    return out


@pytest.mark.parametrize("path", OUTSIDE, ids=lambda p: str(p.relative_to(GATEWAY)))
def test_no_database_driver_or_sql_outside_the_store(path: Path) -> None:
    tree = ast.parse(path.read_text())
    drivers = _imports(tree) & DRIVERS
    assert not drivers, f"{path.relative_to(ROOT)} imports {sorted(drivers)}"
    sql = [(line, text[:60]) for line, text in _strings(tree) if SQL.search(text)]
    assert not sql, f"{path.relative_to(ROOT)} has SQL: {sql}"


@pytest.mark.parametrize(
    "text",
    [
        "SELECT id FROM devices WHERE x = ?",
        "INSERT OR IGNORE INTO tags VALUES (?)",
        "UPDATE devices SET online = 0",
        "DELETE FROM events",
        "CREATE TABLE t (x)",
        "PRAGMA journal_mode = WAL",
    ],
)
def test_the_sql_check_recognises_sql(text: str) -> None:
    assert SQL.search(text)


def test_the_sql_check_lets_prose_pass() -> None:
    prose = "Select the devices to delete from the list, then update their settings."
    assert not SQL.search(prose)


def test_the_store_is_where_the_sql_is() -> None:
    """The check looks at the right files: the store's handlers do hold SQL, and its
    backends import their drivers."""
    handlers = (STORE / "ops" / "devices.py").read_text()
    assert any(SQL.search(t) for _, t in _strings(ast.parse(handlers)))
    assert "sqlite3" in _imports(ast.parse((STORE / "sqlite" / "tx.py").read_text()))


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("gateway", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(imported, module)
            if chain is not None:
                cycles.append(" -> ".join([module, *chain]))
    assert not cycles, "\n".join(cycles)
