"""The PostgreSQL Tx's translation of the shared handlers' SQL (gateway/store/ops/_tx.py):
``?`` becomes psycopg's ``%s`` outside string literals, a literal ``%`` is doubled, a
numbered placeholder is refused, and each distinct text is translated once; and the
SQLite floor that SQL sets (``RETURNING``: 3.35)."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

import pytest

from gateway.store.ops import catalog, data, devices, integrations
from gateway.store.postgresql.tx import pg_sql
from gateway.store.sqlite.tx import require_sqlite


def test_placeholders_become_psycopg_ones() -> None:
    assert pg_sql("UPDATE t SET a = ? WHERE b = ?") == "UPDATE t SET a = %s WHERE b = %s"


def test_a_percent_sign_is_doubled_and_literals_are_left_alone() -> None:
    sql = "SELECT '?', a % 2 FROM t WHERE c LIKE ? ESCAPE '\\' AND d = 'x%'"
    assert pg_sql(sql) == "SELECT '?', a %% 2 FROM t WHERE c LIKE %s ESCAPE '\\' AND d = 'x%'"


def test_a_numbered_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match="numbered placeholder"):
        pg_sql("UPDATE t SET a = ?1 WHERE b = ?1")


def test_each_text_is_translated_once() -> None:
    sql = "DELETE FROM t WHERE id = ? AND k = ?"
    assert pg_sql("".join(sql)) is pg_sql("".join(sql))  # equal texts, one cached result


@pytest.mark.parametrize("module", [catalog, data, devices, integrations])
def test_no_handler_uses_a_numbered_placeholder(module: ModuleType) -> None:
    """Every string in the shared handlers' source that holds a placeholder translates
    (the tests on PostgreSQL run each statement; this also catches a branch they miss)."""
    tree = ast.parse(inspect.getsource(module))
    texts = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and "?" in n.value
    ]
    assert texts
    for text in texts:
        pg_sql(text)


def test_an_sqlite_too_old_for_returning_is_refused_with_a_reason() -> None:
    require_sqlite((3, 35, 0))
    with pytest.raises(RuntimeError, match=r"SQLite 3\.34\.1 is too old.*3\.35"):
        require_sqlite((3, 34, 1))
