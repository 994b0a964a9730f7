"""Every input the fuzzers kept, replayed through its target's invariants on every test run:
the minimised corpus (``fuzz/corpus/<target>/``) and every input that once broke a target
(``fuzz/crashes/<target>/``), so each crash found is a test from then on
(docs/reliability.md, "Fuzzing").  No atheris needed: the targets' ``check`` is plain Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType

import pytest

from gateway.testing.fuzz import TARGETS, load

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"

# Crash inputs whose fix has not landed: xfail (strict) until it does, with why.
PENDING: dict[str, str] = {}


def _inputs(kind: str) -> list[object]:
    out: list[object] = []
    for target in TARGETS:
        for path in sorted((FUZZ / kind / target).glob("*")):
            reason = PENDING.get(path.name)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(target, path, marks=marks, id=f"{target}/{path.name[:12]}"))
    return out


@pytest.fixture(scope="module")
def prepared() -> Iterator[dict[str, ModuleType]]:
    """Each target module, with what it needs running (the CSV target's gateway)."""
    modules = {name: load(name) for name in TARGETS}
    with getattr(modules["csv_import"], "prepared", nullcontext)():
        yield modules


def test_every_target_has_a_corpus() -> None:
    for target in TARGETS:
        assert len(list((FUZZ / "corpus" / target).glob("*"))) >= 5, target


def test_seeds_hold(prepared: dict[str, ModuleType]) -> None:
    for module in prepared.values():
        for data in module.seeds():
            module.check(data)


@pytest.mark.parametrize(("target", "path"), _inputs("corpus"))
def test_corpus_input(prepared: dict[str, ModuleType], target: str, path: Path) -> None:
    prepared[target].check(path.read_bytes())


@pytest.mark.parametrize(("target", "path"), _inputs("crashes"))
def test_crash_input(prepared: dict[str, ModuleType], target: str, path: Path) -> None:
    prepared[target].check(path.read_bytes())
