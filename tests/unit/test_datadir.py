"""The data directory is private (gateway/datadir.py): created 0700 with a 0600 database
whatever the umask, and an existing one with loose modes tightened, never loosened."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.datadir import secure_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a careless service manager: everything world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    data = tmp_path / "a" / "var"
    assert secure_data_dir(data) == []
    assert mode(data) == 0o700
    assert mode(data / "tls") == 0o700
    assert mode(data / "content") == 0o700
    assert mode(data / "gateway.db") == 0o600
    assert (data / "gateway.db").stat().st_size == 0  # an empty SQLite database


@pytest.mark.usefixtures("open_umask")
def test_loose_modes_are_tightened_and_strict_ones_kept(tmp_path: Path) -> None:
    data = tmp_path / "var"
    (data / "tls").mkdir(parents=True)
    (data / "content").mkdir()
    loose = {
        "gateway.db": 0o644,
        "gateway.db-wal": 0o644,
        "gateway.db-shm": 0o664,
        "admin.token": 0o640,
        "integrations.key": 0o644,
        "tls/server.key": 0o644,
        "tls/ca.key": 0o604,
        "content/5fca17e9": 0o644,
    }
    for name, bits in loose.items():
        (data / name).write_bytes(b"x")
        os.chmod(data / name, bits)
    (data / "secrets.key").write_bytes(b"x")
    os.chmod(data / "secrets.key", 0o400)  # stricter than needed: stays
    (data / "tls" / "ca.pem").write_text("public")
    os.chmod(data / "tls" / "ca.pem", 0o644)
    os.chmod(data, 0o755)
    changed = secure_data_dir(data)
    assert set(changed) == {".", "tls", "content", *loose}
    for name in loose:
        assert mode(data / name) == 0o600, name
    assert mode(data / "secrets.key") == 0o400
    assert mode(data / "tls" / "ca.pem") == 0o644  # public, and unreachable inside 0700
    assert mode(data) == 0o700
    assert secure_data_dir(data) == []  # idempotent


def test_sqlite_gives_its_wal_the_database_mode(tmp_path: Path) -> None:
    """Why creating gateway.db 0600 up front is enough: SQLite copies its mode to the
    -wal and -shm files it creates (checked here with the real library)."""
    import sqlite3

    data = tmp_path / "var"
    old = os.umask(0o022)
    try:
        secure_data_dir(data)
        conn = sqlite3.connect(data / "gateway.db")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        assert mode(data / "gateway.db-wal") == 0o600
        assert mode(data / "gateway.db-shm") == 0o600
        conn.close()
    finally:
        os.umask(old)
